"""Reading parallel text: errors that name files and lines, gzip, and pair filtering."""

import gzip

import pytest

from transduce.data.text import DataError, filter_pairs, read_lines, read_parallel


def test_read_lines_plain_and_crlf(tmp_path):
    path = tmp_path / "a.en"
    path.write_bytes("one\r\ntwo ü\n\nfour".encode())
    assert read_lines(path) == ["one", "two ü", "", "four"]


def test_read_gzip_equals_plain(tmp_path):
    lines = ["Ein Hund läuft.", "Zwei Männer", "", "drei"]
    text = "\n".join(lines) + "\n"
    plain = tmp_path / "x.de"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "x.de.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(text)
    assert read_lines(packed) == read_lines(plain) == lines
    other = tmp_path / "x.en.gz"
    with gzip.open(other, "wt", encoding="utf-8") as f:
        f.write("a\nb\nc\nd\n")
    assert read_parallel(other, packed) == (["a", "b", "c", "d"], lines)


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.en"
    path.write_bytes(b"fine\nalso fine\nbroken \xff here\nok\n")
    good = tmp_path / "good.de"
    good.write_text("a\nb\nc\nd\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_parallel(good, path)
    assert f"{path}:3:" in str(err.value)
    assert "UTF-8" in str(err.value)


def test_invalid_utf8_in_gzip_names_file_and_line(tmp_path):
    path = tmp_path / "bad.de.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"ok\n\xc3\x28\n")
    with pytest.raises(DataError, match=r"bad\.de\.gz:2:"):
        read_lines(path)


def test_mismatched_line_counts_name_both_files(tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.de"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    tgt.write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    message = str(err.value)
    assert str(src) in message and str(tgt) in message
    assert "3" in message and "2" in message


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.en"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.en.*empty"):
        read_lines(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_lines(tmp_path / "missing.en")


def test_filter_pairs_counts_each_reason():
    src = [[1, 2], [], [1] * 6, [1], [1, 2, 3], [1] * 4, [1], [1, 2]]
    tgt = [[3], [4], [4], [], [1] * 7, [1], [1, 1, 1], [5, 6]]
    # kept: 0 (2:1), 6 (1:3, ratio 3 allowed), 7; empty: 1, 3; long: 2, 4; ratio: 5 (4:1)
    keep, report = filter_pairs(src, tgt, max_len=5, max_ratio=3.0)
    assert keep == [0, 6, 7]
    assert (report.kept, report.dropped_empty, report.dropped_long, report.dropped_ratio) == (
        3,
        2,
        2,
        1,
    )
    summary = report.summary("train")
    assert "kept 3/8" in summary and "dropped 5" in summary


def test_filter_pairs_requires_aligned_inputs():
    with pytest.raises(ValueError):
        filter_pairs([[1]], [[1], [2]], max_len=5, max_ratio=3.0)
