"""Reading parallel text with errors that name the file and line, and length filtering."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from transduce.errors import DataError  # defined with the other user errors; imported from here too


def iter_lines(raw: bytes, name: str) -> Iterator[str]:
    """``raw`` split into lines at ``\\n`` (a final ``\\n`` ends the last line, a ``\\r`` before it is dropped),
    each decoded as UTF-8 as it is reached. Text is never guessed or repaired: an undecodable line is a DataError
    naming ``name:LINE`` and the byte, raised when that line's turn comes, so that a reader checking each line
    reports whichever problem comes first (an error on line 7 of 10 says line 7)."""
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            yield line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            raise DataError(f"{name}:{number}: invalid UTF-8 at byte {err.start}") from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (``.gz`` allowed), without line endings (see :func:`iter_lines`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # unreadable; gzip: bad magic number, truncated, bad CRC
        raise DataError(f"{path}: cannot read ({err or type(err).__name__})") from None
    lines = list(iter_lines(raw, str(path)))
    if not lines:
        raise DataError(f"{path}: file is empty")
    return lines


def read_text_stream(stream: TextIO, name: str = "<stdin>") -> list[str]:
    """All lines of an open text stream (stdin), by the rules of :func:`iter_lines`: its bytes when it has
    them, else its text (lone surrogates count as invalid UTF-8). Empty input is no lines."""
    binary = getattr(stream, "buffer", None)
    raw = binary.read() if binary is not None else stream.read().encode("utf-8", "surrogatepass")
    return list(iter_lines(raw, name))


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
