"""End-to-end image translation on rendered digit strings into their German and French names: the toy recipe
learns, the CLI's translate/evaluate against the library run in the test, the encoder started from an OCR model
folder, and the manifest's languages checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from testkit import run_cli

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.config import to_dict
from transduce.data.images import read_image_manifest
from transduce.data.tokenizer import train_sentencepiece
from transduce.errors import DataError
from transduce.metrics.bleu import sacre_scores
from transduce.models.folder import write_model_folder
from transduce.read_images import ImageTranslator
from transduce.tasks import load
from transduce.tasks.image_translation import ImageSTTask
from transduce.tasks.ocr import build_ocr
from transduce.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    assert main(["data", "digit-images", "--out", str(folder), "--train", "300", "--dev", "40"]) == 0
    return folder


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory) -> Path:
    """recipes/tiny-digits-imt.yaml trained on the digit images (about 30 s on one core)."""
    run = tmp_path_factory.mktemp("imt") / "run"
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-imt.yaml", [f"data.dir={data}"])
    Trainer(cfg, run, log=lambda _: None, show_progress=False).fit()
    return run


def test_the_toy_learns_and_the_cli_scores_what_the_library_translates(data: Path, trained: Path, capsys) -> None:
    dev = read_image_manifest(data / "dev.jsonl")
    translator = load(trained)
    assert isinstance(translator, ImageTranslator)
    images = [x.image for x in dev]
    for lang in ("de", "fr"):
        hyps = translator.translate(images, lang)
        bleu = sacre_scores(hyps, [x.translation[lang] for x in dev])["bleu"]
        assert bleu > 25, (lang, list(zip(hyps, [x.translation[lang] for x in dev], strict=True))[:4])
        code, out, _ = run_cli(["evaluate", "--model", str(trained), "--manifest", str(data / "dev.jsonl"),
                                "--tgt-lang", lang, "--json"], capsys)
        assert code == 0 and json.loads(out)["bleu"] == bleu and json.loads(out)["images"] == len(dev)
    french = translator.translate(images[:2], "fr")
    code, out, _ = run_cli(["translate", "--model", str(trained), "--tgt-lang", "fr", *map(str, images[:2])], capsys)
    assert code == 0 and out.splitlines() == [f"{p}\t{t}" for p, t in zip(images[:2], french, strict=True)]
    code, out, _ = run_cli(["translate", "--model", str(trained), "--manifest", str(data / "dev.jsonl")], capsys)
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == [
        {"id": x.id, "text": t} for x, t in zip(dev, translator.translate(images), strict=True)]  # default: de
    code, _, err = run_cli(["translate", "--model", str(trained), "--tgt-lang", "cs", str(images[0])], capsys)
    assert code == 2 and "translates into de, fr" in err


def test_encoder_and_ctc_head_start_from_an_ocr_model(data: Path, tmp_path: Path) -> None:
    ocr_cfg = load_recipe(ROOT / "recipes" / "tiny-digits-ocr.yaml", [f"data.dir={data}"])
    texts = [x.text for x in read_image_manifest(data / "train.jsonl")]
    tokenizer = train_sentencepiece(texts, tmp_path / "spm.model", vocab_size=16, model_type="char")
    torch.manual_seed(3)
    ocr = build_ocr(ocr_cfg, len(tokenizer))
    folder = write_model_folder(tmp_path / "ocr", ocr.state_dict(), to_dict(ocr_cfg), [tmp_path / "spm.model"], {})
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-imt.yaml", [f"data.dir={data}",
                                                                   f"model.init_encoder_from={folder}"])
    (tmp_path / "run").mkdir()  # the trainer makes the run folder first
    task = ImageSTTask(cfg, tmp_path / "run", log=lambda _: None)
    assert (tmp_path / "run" / "spm.model").read_bytes() == (folder / "spm.model").read_bytes()  # its tokenizer
    model = task.build_model()
    task.init_components(model)
    theirs = ocr.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith(("encoder.", "head.")) and "subsampling.mean" not in name and "subsampling.std" not in name:
            torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_a_manifest_without_a_target_language_names_the_line(data: Path, tmp_path: Path) -> None:
    cfg = load_recipe(ROOT / "recipes" / "tiny-digits-imt.yaml", [f"data.dir={data}", "data.tgt_langs=[de, cs]"])
    with pytest.raises(DataError, match=r"train.jsonl: train-00000 has no 'cs' translation"):
        ImageSTTask(cfg, tmp_path / "run", log=lambda _: None)
