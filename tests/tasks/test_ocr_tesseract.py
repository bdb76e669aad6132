"""benchmarks/ocr_tesseract.py: Tesseract's paged output parsed one text per image (hand-made pages, and a real run
on rendered lines when tesseract is installed), and the whole benchmark on a tiny model."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from transduce.data.images import ImageLine, write_image_manifest

ROOT = Path(__file__).resolve().parents[2]
HAVE_TESSERACT = shutil.which("tesseract") is not None


def load_script():
    spec = importlib.util.spec_from_file_location("ocr_tesseract", ROOT / "benchmarks" / "ocr_tesseract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_pages_become_one_normalized_text_per_image() -> None:
    bench = load_script()
    out = "Two dogs, running.\n\f\fA man's\nhat!\n\f"  # page 2 empty, page 3 on two lines, a trailing form feed
    assert bench.parse_tesseract(out, 3) == ["two dogs running", "", "a man's hat"]
    assert bench.parse_tesseract("One.\n\fTwo.\n", 2) == ["one", "two"]  # no form feed after the last page
    assert bench.parse_tesseract("One.\n\f\n", 2) == ["one", ""]  # an empty last page
    with pytest.raises(ValueError, match="printed 2 pages for 3 images"):
        bench.parse_tesseract("a\fb", 3)


def _line(path: Path, text: str) -> ImageLine:
    face = ImageFont.load_default(size=24)
    left, top, right, bottom = (int(v) for v in face.getbbox(text))
    image = Image.new("L", (right - left + 8, bottom - top + 8), 255)
    ImageDraw.Draw(image).text((4 - left, 4 - top), text, font=face, fill=0)
    image = image.resize((round(image.width * 32 / image.height), 32))
    image.save(path)
    return ImageLine(path.stem, path, image.width, text.lower().rstrip("."), "builtin/test", text)


@pytest.mark.skipif(not HAVE_TESSERACT, reason="tesseract is not installed (make system-deps)")
def test_a_real_tesseract_run_parses_to_the_lines(tmp_path: Path) -> None:
    bench = load_script()
    texts = ["Three dogs run.", "Three people", "Blue water"]
    lines = [_line(tmp_path / f"l{i}.png", t) for i, t in enumerate(texts)]
    Image.new("L", (120, 32), 255).save(tmp_path / "blank.png")
    hyps, seconds = bench.run_tesseract([x.image for x in lines] + [tmp_path / "blank.png"])
    assert len(hyps) == 4 and seconds > 0
    assert hyps[:3] == [x.text for x in lines], hyps
    big = bench.scaled_copies(lines[:1], 2.0, tmp_path)
    assert Image.open(big[0]).size == (2 * lines[0].width, 64)


@pytest.mark.skipif(not HAVE_TESSERACT, reason="tesseract is not installed (make system-deps)")
def test_the_benchmark_prints_both_systems(tmp_path: Path, monkeypatch, capsys) -> None:
    from transduce.cli.config import load_recipe
    from transduce.config import to_dict
    from transduce.data.tokenizer import train_sentencepiece
    from transduce.models.folder import write_model_folder
    from transduce.tasks.ocr import build_ocr

    bench = load_script()
    lines = [_line(tmp_path / f"l{i}.png", t) for i, t in enumerate(["Three dogs run.", "Three people"])]
    write_image_manifest(tmp_path / "m.jsonl", lines)
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-ocr.yaml")
    tokenizer = train_sentencepiece([x.text for x in lines], tmp_path / "spm.model", vocab_size=16, model_type="char")
    torch.manual_seed(0)
    model = build_ocr(cfg, len(tokenizer))  # untrained: the table is under test, not the scores
    folder = write_model_folder(tmp_path / "model", model.state_dict(), to_dict(cfg), [tmp_path / "spm.model"], {})
    monkeypatch.setattr(sys, "argv", ["ocr_tesseract.py", "--model", str(folder), "--manifest",
                                      str(tmp_path / "m.jsonl")])
    bench.main()
    out = capsys.readouterr().out
    assert "ours, CTC greedy" in out and "tesseract 5 (psm 7)" in out and "2 images of" in out
    tess = next(line for line in out.splitlines() if line.startswith("tesseract"))
    assert tess.split()[4] == "0.00" and tess.endswith("-")  # Tesseract reads these clean lines exactly: no ratio
