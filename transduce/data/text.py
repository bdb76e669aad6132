"""Reading parallel text with errors that name the file and line, and length filtering."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file (and line where there is one)."""


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (``.gz`` allowed), without line endings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: file is empty")
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{number}: invalid UTF-8 at byte {err.start}") from None
    return out


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    """Line-aligned source and target sentences; counts must match."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
            "parallel files must be line-aligned"
        )
    return src, tgt


@dataclass(frozen=True)
class FilterReport:
    kept: int
    dropped_empty: int
    dropped_long: int
    dropped_ratio: int

    def summary(self, name: str) -> str:
        total = self.kept + self.dropped_empty + self.dropped_long + self.dropped_ratio
        dropped = total - self.kept
        return (
            f"{name}: kept {self.kept}/{total} pairs, dropped {dropped} "
            f"({100 * dropped / max(total, 1):.2f}%: {self.dropped_empty} empty, "
            f"{self.dropped_long} too long, {self.dropped_ratio} length ratio)"
        )


def filter_pairs(
    src: list[list[int]], tgt: list[list[int]], *, max_len: int, max_ratio: float
) -> tuple[list[int], FilterReport]:
    """Indices of tokenized pairs to keep: non-empty, at most ``max_len`` tokens each, and a
    length ratio of at most ``max_ratio`` either way."""
    keep, empty, long, ratio = [], 0, 0, 0
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        if not s or not t:
            empty += 1
        elif len(s) > max_len or len(t) > max_len:
            long += 1
        elif max(len(s), len(t)) > max_ratio * min(len(s), len(t)):
            ratio += 1
        else:
            keep.append(i)
    return keep, FilterReport(len(keep), empty, long, ratio)
