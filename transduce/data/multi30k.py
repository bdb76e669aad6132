"""Multi30k task 1 (Elliott et al. 2016): download or copy, verify checksums, decompress.

Result in OUT: ``{train,val,test_2016_flickr}.{lang}`` plain text, and ``tok/`` with the
official lowercased/normalized/tokenized references used for BLEU in the MMT literature.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from pathlib import Path

from transduce.data.multi30k_checksums import SHA256
from transduce.data.text import DataError

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1"
SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("en", "de", "fr", "cs")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(name: str, dest: Path, source: Path | None) -> None:
    """Copy ``name`` from ``source`` or download it from upstream, then verify its checksum."""
    if source is not None:
        origin = source / name
        if not origin.is_file():
            raise DataError(f"{origin}: no such file (from --from {source})")
        shutil.copyfile(origin, dest)
    else:
        folder = "raw" if name.endswith(".gz") else ""
        url = f"{BASE_URL}/{folder}/{Path(name).name}" if folder else f"{BASE_URL}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            raise DataError(f"{url}: download failed ({err}); use --from DIR with a local copy") from None
    actual = _sha256(dest)
    if actual != SHA256[name]:
        dest.unlink()
        raise DataError(f"{source / name if source else name}: checksum mismatch ({actual} != {SHA256[name]})")


def prepare_multi30k(out: str | Path, *, langs: tuple[str, ...] = ("en", "de"),
                     source: str | Path | None = None, log=print) -> Path:
    """Fetch, verify and decompress the raw splits (and tokenized references) for ``langs``."""
    out = Path(out)
    (out / "tok").mkdir(parents=True, exist_ok=True)
    src = Path(source) if source is not None else None
    for lang in langs:
        if lang not in LANGS:
            raise DataError(f"--pairs: unknown language {lang!r} (Multi30k has {', '.join(LANGS)})")
        for split in SPLITS:
            gz = out / f"{split}.{lang}.gz"
            _fetch(f"{split}.{lang}.gz", gz, src)
            with gzip.open(gz, "rb") as f_in, open(out / f"{split}.{lang}", "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
            gz.unlink()
        for split in ("val", "test_2016_flickr"):
            name = f"tok/{split}.lc.norm.tok.{lang}"
            _fetch(name, out / name, src)
    log(f"multi30k: {', '.join(langs)} x {', '.join(SPLITS)} verified and written to {out}")
    return out
