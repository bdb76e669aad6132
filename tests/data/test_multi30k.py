"""Multi30k preparation: copy from a local mirror or "download" (file:// URL), verify checksums."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import transduce.data.multi30k as m30k
from transduce.data.text import DataError, read_lines

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/multi30k not available")


def test_copy_from_local_mirror(tmp_path: Path) -> None:
    out = m30k.prepare_multi30k(tmp_path / "out", langs=("en", "de"), source=SHARED, log=lambda _: None)
    assert len(read_lines(out / "train.en")) == len(read_lines(out / "train.de")) == 29000
    assert len(read_lines(out / "test_2016_flickr.de")) == 1000
    assert (out / "tok" / "val.lc.norm.tok.de").is_file()


def test_download_path_verifies_checksums(tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "raw").mkdir(parents=True)
    shutil.copytree(SHARED / "tok", mirror / "tok")
    for path in SHARED.glob("*.gz"):
        shutil.copy(path, mirror / "raw" / path.name)
    monkeypatch.setattr(m30k, "BASE_URL", mirror.as_uri())
    out = m30k.prepare_multi30k(tmp_path / "out", langs=("de",), log=lambda _: None)
    assert len(read_lines(out / "val.de")) == 1014

    (mirror / "raw" / "val.fr.gz").write_bytes(b"not the real file")
    with pytest.raises(DataError, match="val.fr.gz: checksum mismatch"):
        m30k.prepare_multi30k(tmp_path / "out2", langs=("fr",), log=lambda _: None)


def test_missing_file_and_unknown_language(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train.en.gz: no such file"):
        m30k.prepare_multi30k(tmp_path / "out", source=tmp_path, log=lambda _: None)
    with pytest.raises(DataError, match="unknown language 'xx'"):
        m30k.prepare_multi30k(tmp_path / "out", langs=("xx",), source=SHARED, log=lambda _: None)
