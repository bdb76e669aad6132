"""The OCR task end to end on rendered digit strings: the toy recipe learns within the test budget, the image
recognizer and the CLI (transcribe files and manifests, evaluate CER/WER, one-line errors for bad images), the
image cascade through the bundled translation model against the two models run one after the other, and the
task's config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import run_cli

from transduce.cascade import Cascade, Truecaser
from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.data.images import read_image_manifest
from transduce.errors import ConfigError
from transduce.metrics.wer import cer, wer
from transduce.read_images import ImageRecognizer
from transduce.recognize import Recognizer
from transduce.tasks import load
from transduce.tasks.ocr import build_ocr
from transduce.train.trainer import Trainer
from transduce.translate import Translator

ROOT = Path(__file__).resolve().parents[2]
MT = ROOT / "models" / "multi30k-en-de"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """recipes/tiny-digits-ocr.yaml trained on 300 rendered digit strings (about 15 s on one core)."""
    base = tmp_path_factory.mktemp("ocr")
    assert main(["data", "digit-images", "--out", str(base / "data"), "--train", "300", "--dev", "40"]) == 0
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-ocr.yaml", [f"data.dir={base / 'data'}"])
    Trainer(cfg, base / "run", log=lambda _: None, show_progress=False).fit()
    return base


def test_the_toy_learns_to_read_digits(trained: Path) -> None:
    dev = read_image_manifest(trained / "data" / "dev.jsonl")
    recognizer = Recognizer.load(trained / "run")  # the task's own recognizer class
    assert isinstance(recognizer, ImageRecognizer) and isinstance(load(trained / "run"), ImageRecognizer)
    hyps = recognizer.transcribe([x.image for x in dev])
    refs = [x.text for x in dev]
    assert cer(hyps, refs) < 5.0, list(zip(hyps, refs, strict=True))[:5]
    assert cer(recognizer.transcribe([x.image for x in dev[:8]], beam=4), refs[:8]) < 5.0
    best = recognizer.search([dev[0].image])[0][0]  # token "times" are pixel columns inside the image
    assert all(0 <= t < dev[0].width for t in best.times) and best.times == sorted(best.times)


def test_cli_transcribes_files_and_manifests_and_evaluates(trained: Path, capsys) -> None:
    run, manifest = str(trained / "run"), trained / "data" / "dev.jsonl"
    dev = read_image_manifest(manifest)
    expected = Recognizer.load(run).transcribe([x.image for x in dev])
    code, out, _ = run_cli(["transcribe", "--model", run, str(dev[1].image), str(dev[0].image)], capsys)
    assert code == 0 and out.splitlines() == [f"{dev[1].image}\t{expected[1]}", f"{dev[0].image}\t{expected[0]}"]
    code, out, _ = run_cli(["transcribe", "--model", run, "--manifest", str(manifest)], capsys)
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == [
        {"id": x.id, "text": t} for x, t in zip(dev, expected, strict=True)]
    code, out, _ = run_cli(["evaluate", "--model", run, "--manifest", str(manifest), "--json"], capsys)
    result = json.loads(out)
    refs = [x.text for x in dev]
    assert code == 0 and result["cer"] == round(cer(expected, refs), 2)
    assert result["wer"] == round(wer(expected, refs), 2)
    assert result["images"] == len(dev) and result["images_per_second"] > 0


def test_bad_images_are_one_line_errors(trained: Path, tmp_path: Path, capsys) -> None:
    good = read_image_manifest(trained / "data" / "dev.jsonl")[0].image
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("shopping list")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:100])
    for name, why in (("empty.png", "empty file"), ("notes.jpg", "not an image"), ("cut.png", "cannot decode"),
                      ("gone.png", "no such file")):
        code, out, err = run_cli(["transcribe", "--model", str(trained / "run"), str(good), str(tmp_path / name)],
                                 capsys)
        assert code == 2 and out == "", name
        assert err.startswith(f"transduce transcribe: error: {tmp_path / name}: {why}") and err.count("\n") == 1, err
    code, _, err = run_cli(["transcribe", "--model", str(trained / "run"), "--stream", str(good)], capsys)
    assert code == 2 and "reads whole images" in err


def test_image_cascade_equals_ocr_then_translation(trained: Path, tmp_path: Path, capsys) -> None:
    if not (MT / "config.yaml").is_file():
        pytest.skip("bundled models/multi30k-en-de missing")
    dev = read_image_manifest(trained / "data" / "dev.jsonl")[:3]
    recognizer, translator = ImageRecognizer.load(trained / "run"), Translator.load(MT)
    truecaser = Truecaser.from_text(MT / "truecase.json")
    expected = translator.translate([truecaser(t) for t in recognizer.transcribe([x.image for x in dev])])
    assert Cascade.load(trained / "run", MT).translate([x.image for x in dev]) == expected
    files = [str(x.image) for x in dev]
    code, out, _ = run_cli(["translate", "--model", str(MT), "--asr", str(trained / "run"), *files], capsys)
    assert code == 0 and out.splitlines() == [f"{f}\t{t}" for f, t in zip(files, expected, strict=True)]
    rows = [json.dumps({"id": x.id, "image": str(x.image), "width": x.width, "text": x.text, "font": x.font,
                        "translation": {"de": e}}) for x, e in zip(dev, expected, strict=True)]
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    code, out, _ = run_cli(["translate", "--model", str(MT), "--asr", str(trained / "run"), "--manifest",
                            str(tmp_path / "m.jsonl")], capsys)
    assert code == 0 and [json.loads(line)["text"] for line in out.splitlines()] == expected
    code, out, _ = run_cli(["evaluate", "--model", str(MT), "--asr", str(trained / "run"), "--manifest",
                            str(tmp_path / "m.jsonl"), "--json"], capsys)
    assert code == 0 and json.loads(out)["bleu"] == 100.0 and json.loads(out)["images"] == 3  # refs = outputs


def test_config_checks_name_the_key() -> None:
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-ocr.yaml", ["model.input_dim=40"])
    with pytest.raises(ConfigError, match=r"model.input_dim: .* set it to 32, got 40"):
        build_ocr(cfg, 12)
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-ocr.yaml", ["model.subsampling=6"])
    with pytest.raises(ConfigError, match=r"model.subsampling: an image model reduces the width by one of \[4, 8\]"):
        build_ocr(cfg, 12)
