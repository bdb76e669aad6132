"""Low-resource translation data (issue 27's Czech study): fixed-seed nested subsets of a parallel corpus (e.g. 1k,
3k and 10k en-cs pairs of Multi30k train), the target side of the pairs each subset leaves out (the monolingual text
that back-translation turns into synthetic pairs), and the synthetic pairs themselves.

Layout written for a subset of n pairs: ``OUT/pairs-n/{train,val,test_2016_flickr}.{src,tgt}`` (a folder the
translation recipes read with ``data.dir``) and ``OUT/pairs-n/mono.{tgt}``; ``back_translate`` adds
``train.bt.{src,tgt}`` (train with ``data.train=train,train.bt``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from transduce.data.text import read_lines, read_parallel
from transduce.errors import DataError

SPLITS = ("val", "test_2016_flickr")
"""Evaluation splits copied whole into every subset folder."""


def _find(folder: Path, name: str) -> Path:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    raise DataError(f"{folder / name}: no such file (nor .gz)")


def _write(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def subset_order(count: int, seed: int) -> list[int]:
    """The fixed order in which pairs enter the subsets: a permutation of ``count`` drawn from ``seed``."""
    return np.random.default_rng(seed).permutation(count).tolist()


def write_subsets(source: str | Path, out: str | Path, *, sizes: Sequence[int] = (1000, 3000, 10000), seed: int = 1,
                  src: str = "en", tgt: str = "cs") -> list[Path]:
    """Nested subsets (the first n pairs of ``subset_order``) of ``source``'s train.{src,tgt} and the target side
    of the other training pairs; the evaluation splits copied. Returns the subset folders in ``sizes`` order."""
    source, out = Path(source), Path(out)
    src_lines, tgt_lines = read_parallel(_find(source, f"train.{src}"), _find(source, f"train.{tgt}"))
    too_big = [n for n in sizes if not 0 < n <= len(src_lines)]
    if too_big:
        raise DataError(f"--sizes: {too_big[0]} pairs asked, {source}/train.{src} has {len(src_lines)}")
    order = subset_order(len(src_lines), seed)
    folders = []
    for n in sizes:
        folder = out / f"pairs-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"train.{src}", [src_lines[i] for i in order[:n]])
        _write(folder / f"train.{tgt}", [tgt_lines[i] for i in order[:n]])
        _write(folder / f"mono.{tgt}", [tgt_lines[i] for i in order[n:]])
        for split in SPLITS:
            for lang in (src, tgt):
                _write(folder / f"{split}.{lang}", read_lines(_find(source, f"{split}.{lang}")))
        folders.append(folder)
    return folders


def back_translate(folder: str | Path, translate: Callable[[list[str]], list[str]], *, src: str = "en",
                   tgt: str = "cs", limit: int = 0) -> int:
    """``folder``'s mono.{tgt} (its first ``limit`` lines; 0 = all) translated into ``src`` by ``translate`` (a
    tgt->src model) -> train.bt.{src} (synthetic) and train.bt.{tgt} (real). Returns the pairs written."""
    folder = Path(folder)
    mono = read_lines(folder / f"mono.{tgt}")
    mono = mono[:limit] if limit else mono
    synthetic = translate(mono)
    if len(synthetic) != len(mono):
        raise DataError(f"{folder}: {len(mono)} sentences translated into {len(synthetic)}")
    _write(folder / f"train.bt.{src}", synthetic)
    _write(folder / f"train.bt.{tgt}", mono)
    return len(mono)
