"""Low-resource subsets: nested and fixed by the seed, the unused pairs' target side as monolingual text, the
evaluation splits copied; back-translation writes aligned synthetic pairs; the benchmark's dry run plans each
method's runs."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from transduce.data.low_resource import back_translate, subset_order, write_subsets
from transduce.data.text import read_lines
from transduce.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def corpus(folder: Path, count: int = 50) -> Path:
    folder.mkdir()
    for lang in ("en", "cs"):
        lines = "".join(f"{lang} sentence {i}\n" for i in range(count))
        (folder / f"train.{lang}.gz").write_bytes(gzip.compress(lines.encode()))
        for split in ("val", "test_2016_flickr"):
            (folder / f"{split}.{lang}").write_text(f"{split} {lang} a\n{split} {lang} b\n")
    return folder


def test_subsets_are_nested_fixed_and_leave_the_rest_as_monolingual_text(tmp_path: Path) -> None:
    source = corpus(tmp_path / "m30k")
    small, large = write_subsets(source, tmp_path / "out", sizes=(10, 30), seed=3)
    order = subset_order(50, 3)
    assert read_lines(small / "train.en") == [f"en sentence {i}" for i in order[:10]]
    assert read_lines(small / "train.cs") == [f"cs sentence {i}" for i in order[:10]]  # still aligned
    assert read_lines(large / "train.en")[:10] == read_lines(small / "train.en")  # nested
    assert sorted(read_lines(small / "mono.cs") + read_lines(small / "train.cs")) == sorted(
        f"cs sentence {i}" for i in range(50))  # every Czech sentence once: the unused ones are the monolingual text
    assert read_lines(large / "test_2016_flickr.cs") == ["test_2016_flickr cs a", "test_2016_flickr cs b"]
    again = write_subsets(source, tmp_path / "again", sizes=(10,), seed=3)[0]
    assert read_lines(again / "train.en") == read_lines(small / "train.en")
    other = write_subsets(source, tmp_path / "other", sizes=(10,), seed=4)[0]
    assert read_lines(other / "train.en") != read_lines(small / "train.en")
    with pytest.raises(DataError, match="--sizes: 60 pairs asked"):
        write_subsets(source, tmp_path / "x", sizes=(60,))


def test_back_translation_writes_aligned_synthetic_pairs(tmp_path: Path) -> None:
    folder = write_subsets(corpus(tmp_path / "m30k"), tmp_path / "out", sizes=(10,))[0]
    count = back_translate(folder, lambda lines: [line.upper() for line in lines], limit=5)
    mono = read_lines(folder / "mono.cs")[:5]
    assert count == 5 and read_lines(folder / "train.bt.cs") == mono
    assert read_lines(folder / "train.bt.en") == [line.upper() for line in mono]


def test_the_benchmark_plans_every_method(tmp_path: Path) -> None:
    source = corpus(tmp_path / "m30k")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "low_resource.py"), "--source", str(source),
                          "--out", str(tmp_path / "lr"), "--sizes", "10,20", "--unified", str(tmp_path / "u"),
                          "--dry-run", "--set", "train.max_updates=5"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{m} {n}" for n in (10, 20) for m in ("scratch", "bt",
                                                                                               "finetune")]
    assert "data.src_lang=cs data.tgt_lang=en" in lines[1] and "data.train=train,train.bt" in lines[1]
    assert "data.without=[mt:de,mt:fr]" in lines[2] and "train.max_updates=5" in lines[2]
