"""Text-line images: font-family splits (disjoint, clones together, reserved family never in train/dev), the
rendered manifests against their Multi30k rows, determinism across workers, the held-out guard, the
IMAGE<TAB>TEXT import, and one-line errors for bad image files."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transduce.data.captions import normalize_text
from transduce.data.images import ImageError, load_line_image, open_image, read_image_manifest
from transduce.data.text import DataError
from transduce.data.text_images import (
    DEV_FAMILIES,
    FAMILIES,
    FONT_DIR,
    RESERVED_FAMILIES,
    TRAIN_FAMILIES,
    check_families,
    import_line_images,
    look,
    prepare_heldout_images,
    prepare_text_images,
)

HAVE_FONTS = all((FONT_DIR / f).is_file() for files in FAMILIES.values() for f in files)
needs_fonts = pytest.mark.skipif(not HAVE_FONTS, reason="Debian fonts missing (make system-deps)")
EN = ["A man rides a bike.", "Two dogs play in the snow!", "A girl, smiling, holds a T-shirt.",
      "People walk down a street.", "A boy jumps into water.", "A woman sings on stage."]


def test_split_families_are_disjoint_by_look_and_never_reserved() -> None:
    assert {look(f) for f in TRAIN_FAMILIES}.isdisjoint({look(f) for f in DEV_FAMILIES})
    assert set(RESERVED_FAMILIES).isdisjoint({*TRAIN_FAMILIES, *DEV_FAMILIES})
    assert {look(f) for f in RESERVED_FAMILIES}.isdisjoint({look(f) for f in (*TRAIN_FAMILIES, *DEV_FAMILIES)})
    assert set(TRAIN_FAMILIES) | set(DEV_FAMILIES) | set(RESERVED_FAMILIES) == set(FAMILIES)
    with pytest.raises(ValueError, match="both draw liberation-sans"):
        check_families(["freesans"], ["liberation-sans"])  # a metric clone counts as the same family
    with pytest.raises(ValueError, match="RESERVED"):
        check_families(["dejavu-sans"], ["noto-serif"])
    with pytest.raises(ValueError, match="unknown"):
        check_families(["comic-sans"], ["dejavu-sans"])


def _multi30k(folder: Path) -> Path:
    """A tiny Multi30k folder: train/val/test_2016_flickr English with de/fr/cs lines marked by row."""
    folder.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        lines = EN if split == "train" else [f"{s[:-1]} at night." for s in EN]
        (folder / f"{split}.en.gz").write_bytes(gzip.compress("".join(f"{s}\n" for s in lines).encode()))
        for lang in ("de", "fr", "cs"):
            rows = "".join(f"{lang} {split} row {i}\n" for i in range(len(lines)))
            (folder / f"{split}.{lang}.gz").write_bytes(gzip.compress(rows.encode()))
    return folder


@needs_fonts
def test_rendered_manifests_follow_their_rows_and_families(tmp_path: Path) -> None:
    source = _multi30k(tmp_path / "m30k")
    made = prepare_text_images(tmp_path / "one", source, train_sentences=4, dev_sentences=3, workers=1,
                               log=lambda _: None)
    for split, families, english in (("train", TRAIN_FAMILIES, EN), ("dev", DEV_FAMILIES, None)):
        lines = read_image_manifest(tmp_path / "one" / f"{split}.jsonl", check_images=True, height=32)
        assert [x.id for x in lines] == [x.id for x in made[split]]
        for x in lines:
            row = int(x.id.rsplit("-", 1)[1]) - 1
            assert x.font.split("/")[0] in families
            assert x.translation == {lang: f"{lang} {'train' if split == 'train' else 'val'} row {row}"
                                     for lang in ("de", "fr", "cs")}
            if english is not None:
                assert x.text_original == english[row]
            assert x.text == normalize_text(x.text_original) and x.text
            pixels = load_line_image(x.image, 32)
            assert pixels.shape == (x.width, 32) and 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0
    two = prepare_text_images(tmp_path / "two", source, train_sentences=4, dev_sentences=3, workers=2,
                              log=lambda _: None)
    for split in ("train", "dev"):  # the same images whatever the number of workers
        for a, b in zip(made[split], two[split], strict=True):
            assert a.image.read_bytes() == b.image.read_bytes() and a.font == b.font


@needs_fonts
def test_reserved_family_only_for_a_heldout_folder(tmp_path: Path) -> None:
    source = _multi30k(tmp_path / "m30k")
    with pytest.raises(ValueError, match="heldout=True"):
        prepare_heldout_images(tmp_path / "test", source, sentences=2)
    with pytest.raises(ValueError, match="RESERVED"):
        prepare_text_images(tmp_path / "x", source, train_sentences=2, dev_sentences=2, dev_families=["noto-serif"])
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match="own folder"):
        prepare_heldout_images(tmp_path / "mixed", source, heldout=True, sentences=2)
    test = prepare_heldout_images(tmp_path / "test", source, heldout=True, sentences=3)
    assert {x.font.split("/")[0] for x in test} <= set(RESERVED_FAMILIES) and len(test) == 3


def test_import_scales_to_height_and_normalizes_text(tmp_path: Path) -> None:
    folder = tmp_path / "lines"
    (folder / "img").mkdir(parents=True)
    Image.new("RGB", (200, 50), "white").save(folder / "img" / "a.png")
    Image.new("L", (90, 16), 30).save(folder / "img" / "b.jpg")
    (folder / "list.txt").write_text("img/a.png\tHello, World!\n\nimg/b.jpg\tIt's 5 o'clock.\n")
    lines = import_line_images(folder / "list.txt", tmp_path / "out", height=32)
    again = read_image_manifest(tmp_path / "out" / "list.jsonl", check_images=True, height=32)
    assert [(x.id, x.width, x.text, x.text_original, x.font) for x in again] == [
        ("list-000001", 128, "hello world", "Hello, World!", "import/list"),
        ("list-000003", 180, "it's 5 o'clock", "It's 5 o'clock.", "import/list")]
    assert [x.image for x in again] == [x.image.resolve() for x in lines]
    assert Image.open(again[1].image).size == (180, 32)
    (folder / "bad.txt").write_text("img/a.png\tfine\nimg/a.png no tab here\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected IMAGE<TAB>TEXT"):
        import_line_images(folder / "bad.txt", tmp_path / "out")
    (folder / "missing.txt").write_text("img/zzz.png\ttext\n")
    with pytest.raises(DataError, match=r"missing.txt:1: .*zzz.png: no such file"):
        import_line_images(folder / "missing.txt", tmp_path / "out")


def _huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (the pixel data is not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def test_bad_image_files_are_one_line_errors_naming_them(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((32, 64), 200, np.uint8)).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    _huge_png(tmp_path / "huge.png", 7000, 7000)  # 49 M pixels
    _huge_png(tmp_path / "bomb.png", 20000, 20000)  # past Pillow's own decompression-bomb limit
    Image.new("L", (3000, 10)).save(tmp_path / "wide.png")
    cases = {"empty.png": "empty file", "text.png": "not an image", "cut.png": "cannot decode",
             "huge.png": "too large", "bomb.png": "too large",
             "missing.png": "no such file", "wide.png": "too wide for one line"}
    for name, why in cases.items():
        with pytest.raises(ImageError, match=why) as err:
            load_line_image(tmp_path / name, 32)
        message = str(err.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message, message
    assert open_image(good).size == (64, 32)


def test_manifest_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "image": "a.png", "width": 10, "text": "x", "font": "f"}) + "\n"
                    + json.dumps({"id": "b", "image": "b.png", "width": "10", "text": "x", "font": "f"}) + "\n")
    with pytest.raises(DataError, match=r"m.jsonl:2: key 'width' has type str, expected int"):
        read_image_manifest(path)


@needs_fonts
def test_cli_renders_imports_and_refuses_reserved_mixing(tmp_path: Path, capsys) -> None:
    from transduce.cli.main import main

    source = _multi30k(tmp_path / "m30k")
    assert main(["data", "text-images", "--from", str(source), "--out", str(tmp_path / "ti"), "--train-sentences",
                 "3", "--dev-sentences", "2", "--height", "24"]) == 0
    lines = read_image_manifest(tmp_path / "ti" / "train.jsonl", check_images=True, height=24)
    assert len(lines) == 3 and all(load_line_image(x.image, 24).shape == (x.width, 24) for x in lines)
    assert main(["data", "text-images", "--heldout", "--from", str(source), "--out", str(tmp_path / "ti"),
                 "--test-sentences", "2"]) == 2  # the training folder is refused, as one line
    assert "own folder" in capsys.readouterr().err
    (tmp_path / "l.txt").write_text(f"{lines[0].image}\t{lines[0].text_original}\n")
    assert main(["data", "text-images-import", "--list", str(tmp_path / "l.txt"), "--out", str(tmp_path / "imp")]) == 0
    imported = read_image_manifest(tmp_path / "imp" / "l.jsonl")
    assert [(x.text, x.width) for x in imported] == [(lines[0].text, round(lines[0].width * 32 / 24))]
