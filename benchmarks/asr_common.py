"""Pieces shared by the speech benchmark scripts: a manifest subset, transcript normalization,
timing, and the command line that reproduces one row. Not a benchmark itself."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from common import REPO

from transduce.data.manifest import Utterance, read_manifest

T = TypeVar("T")
DEFAULT_MANIFEST = REPO / "work" / "data" / "digits" / "dev.jsonl"
DEFAULT_MODEL = REPO / "work" / "runs" / "digits" / "model"
_SPOKEN = {"oh": "zero", "o": "zero"}  # "oh" is how many people say 0 in digit strings


def load_subset(manifest: str | Path, limit: int) -> list[Utterance]:
    """The first ``limit`` utterances of ``manifest`` (all of them when limit is 0)."""
    utts = read_manifest(manifest)
    return utts[:limit] if limit > 0 else utts


def normalize(text: str) -> str:
    """Lowercase words without punctuation, pronunciation variants (``zero(2)``) or fillers
    (``<sil>``, ``[noise]``), and "oh" spelled "zero" as in the references."""
    words = []
    for word in text.lower().split():
        if word.startswith(("<", "[", "+")):
            continue
        word = re.sub(r"\(\d+\)$", "", word)
        word = re.sub(r"[^\w']", "", word)
        if word:
            words.append(_SPOKEN.get(word, word))
    return " ".join(words)


def timed(fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[T, float]:
    """fn(*args, **kwargs) and the seconds it took."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def best_of(repeat: int, fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[T, float]:
    """fn(*args, **kwargs) run ``repeat`` times: the last result and the fewest seconds (the least
    disturbed run on a busy machine, as ``timeit`` advises)."""
    runs = [timed(fn, *args, **kwargs) for _ in range(max(1, repeat))]
    return runs[-1][0], min(seconds for _, seconds in runs)


def python_command() -> str:
    """This interpreter, relative to the repository when it lives inside it (``.venv/bin/python``)."""
    exe = Path(sys.executable)
    try:
        return str(exe.absolute().relative_to(REPO))
    except ValueError:
        return str(exe)


def command_line(script: str, options: Sequence[tuple[str, object]]) -> str:
    """``nice -n 10 PYTHON benchmarks/SCRIPT --opt value ...`` run from the repository root; an
    option whose value is True is a bare flag, one whose value is None or False is left out."""
    parts = ["nice", "-n", "10", python_command(), f"benchmarks/{script}"]
    for name, value in options:
        if value is None or value is False:
            continue
        parts.append(name)
        if value is not True:
            parts.append(_shown_path(value) if isinstance(value, Path) else str(value))
    return shlex.join(parts)


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it, else absolute."""
    full = path.absolute()
    return os.path.relpath(full, REPO) if full.is_relative_to(REPO) else str(full)
