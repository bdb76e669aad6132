"""Helpers of the command-line fuzz tests (``test_fuzz.py``, ``test_fuzz_setup.py``): the property every run must
hold, an in-process runner, the models used and a valid WAV to corrupt."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, settings

from transduce.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TRANSLATION = ROOT / "models" / "multi30k-de-en"  # a single Transformer; its name does not change
SPEECH = ROOT / "models" / "digits-conformer-ctc"  # non-causal: cannot stream
ALONE = ("--ensemble", "none", "--beam", "1", "--lm-weight", "0")  # SPEECH without its ensemble partners and LM
STREAMING = ROOT / "models" / "digits-hybrid-streaming"
EXAMPLES = int(os.environ.get("TRANSDUCE_FUZZ_EXAMPLES", "12"))  # e.g. 500 for a deeper run by hand
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass(frozen=True)
class Run:
    argv: list[str]
    code: int
    out: str
    err: str

    def clean(self, *names: str) -> Run:
        """Assert the property: status 0, or status 2 with one stderr line naming one of ``names`` (if given)."""
        shown = f"transduce {' '.join(self.argv)!r} -> {self.code}\nstderr: {self.err!r}"
        assert "Traceback" not in self.err, shown
        assert self.code in (0, 2), shown
        if self.code == 2:
            lines = self.err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"transduce {self.argv[0]}: error: "), shown
            assert not names or any(name in lines[0] for name in names), f"{shown}\nshould name one of {names}"
        return self


def cli(*argv: str | Path, stdin: bytes = b"") -> Run:
    """``transduce ARGV`` in this process with ``stdin`` as its standard input (as a UTF-8 locale's stdin)."""
    args = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.stdin = old_stdin
    return Run(args, code, out.getvalue(), err.getvalue())


def wav(seconds: float = 0.4, rate: int = 16000) -> bytes:
    """A valid 16-bit mono WAV: a chirp, so the digits model has something to say."""
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t)).astype(np.float32), rate, format="WAV",
             subtype="PCM_16")
    return buffer.getvalue()


WAV = wav()
