"""The image modality of the unified task on a three-modality toy: tone "speech", the same letters as text
(``transduce.data.tone_text``) and as rendered text-line images, all into the same toy-language targets. One model
learns all three through the real trainer (per-task training nll in the train log); a mixed batch's loss (speech,
text and image parts, five tasks) is the weighted sum of each task's loss alone; batches respect the padded
budget of three parts; the CLI reads images, and bad ones are one-line errors."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from testkit import ROOT, run_cli

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.data.images import ImageLine, to_height, write_image_manifest
from transduce.data.tone_text import write_tone_text
from transduce.data.tones import SYMBOLS, TONES, tone_translation
from transduce.data.unified_batching import mixed_batches
from transduce.tasks.unified import UnifiedTask
from transduce.unified import Unified

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = ROOT / "recipes" / "tiny-tones-unified.yaml"
HEIGHT = 16


def quiet(_: str) -> None:
    pass


def write_letter_images(out: Path, *, train: int, valid: int, seed: int = 3) -> None:
    """``out/{train,dev}.jsonl``: random tone letters drawn with Pillow's built-in font at random sizes and offsets
    (text "a b d", translations as the tone toy's)."""
    for split, count in (("train", train), ("dev", valid)):
        rng = np.random.default_rng([seed, len(split)])
        lines = []
        for k in range(count):
            letters = "".join(rng.choice(list(TONES), size=int(rng.integers(1, 6))))
            face = ImageFont.load_default(size=int(rng.integers(18, 23)))
            left, top, right, bottom = (int(v) for v in face.getbbox(letters))
            x, y = int(rng.integers(1, 5)), int(rng.integers(1, 4))
            image = Image.new("L", (right - left + x + 3, bottom - top + y + 3), int(rng.integers(200, 256)))
            ImageDraw.Draw(image).text((x - left, y - top), letters, font=face, fill=int(rng.integers(0, 60)))
            path = out / "images" / split / f"{split}-{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            to_height(image, HEIGHT).save(path)
            text = " ".join(letters)
            lines.append(ImageLine(f"{split}-{k:05d}", path, Image.open(path).width, text, "builtin/toy", text,
                                   {lang: tone_translation(letters, lang) for lang in SYMBOLS}))
        write_image_manifest(out / f"{split}.jsonl", lines)


def recipe(base: Path, *overrides: str) -> list[str]:
    return [f"data.dir={base / 'speech'}", f"data.text_dir={base / 'text'}", f"data.image_dir={base / 'images'}",
            "model.inputs=[speech,text,image]", f"model.image_height={HEIGHT}", *overrides]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("unified-images")
    write_tone_text(base, train=200, valid=30)
    write_letter_images(base / "images", train=200, valid=30)
    return base


@pytest.fixture(scope="module")
def trained(data: Path) -> Path:
    """Speech, text and images into one toy language through ``transduce train`` -> run folder."""
    toy = ["data.tasks=[st,mt,imt]", "data.langs=[fr]", "data.tokenizer=word", "train.max_updates=300",
           "train.eval_every=150"]
    sets = [a for s in recipe(data, *toy) for a in ("--set", s)]
    assert main(["train", str(RECIPE), "--out", str(data / "run"), "--no-progress", *sets]) == 0
    return data / "run"


def test_one_model_learns_all_three_modalities(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    first, last = [r for r in rows if r.get("kind") == "valid"][0], rows[-1]
    assert last["kind"] == "valid" and first is not last
    for job in ("st", "mt", "imt"):
        assert last[f"loss_{job}"] < 0.75 * first[f"loss_{job}"], (job, first, last)
    assert min(last["bleu_st_fr"], last["bleu_mt_fr"], last["bleu_imt_fr"]) > 25, last
    train = [r for r in rows if r.get("kind") == "train"]
    for row in train:  # the per-task training nll: the window's nll is their token-weighted mean
        each = [row[f"nll_{job}"] for job in ("st", "mt", "imt")]
        assert min(each) - 1e-3 <= row["nll"] <= max(each) + 1e-3, row
    assert all(train[-1][f"nll_{job}"] < 0.5 * train[0][f"nll_{job}"] for job in ("st", "mt", "imt")), train


def test_the_cli_translates_images(trained: Path, data: Path, capsys) -> None:
    png = data / "images" / "images" / "dev" / "dev-00000.png"
    code, out, _ = run_cli(["translate", "--model", str(trained), str(png)], capsys)
    expected = Unified.load(trained).search([png], modality="image", tgt_lang="fr")[0][0].tokens
    assert code == 0 and out == f"{png}\t{Unified.load(trained).tokenizer.decode([expected])[0]}\n"
    code, out, _ = run_cli(["info", str(trained)], capsys)
    assert "inputs speech, text, image" in out and "imt (image -> fr)" in out


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.png", None, "missing.png"),
    ("broken.png", b"not an image", "broken.png"),
])
def test_bad_images_are_one_line_errors(trained: Path, tmp_path: Path, capsys, name: str, content: bytes | None,
                                        message: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, _, err = run_cli(["translate", "--model", str(trained), str(tmp_path / name)], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and message in err, err
    code, _, err = run_cli(["transcribe", "--model", str(trained), str(tmp_path / name)], capsys)
    assert code == 2 and "--task transcribe: from image this model does translate" in err, err


def test_a_mixed_batch_loss_is_the_weighted_sum_of_each_task_alone(data: Path, tmp_path: Path) -> None:
    """asr + st (speech part), mt (text part), ocr + imt (image part) in one batch."""
    weights = (0.5, 1.0, 2.0, 1.5, 0.7)
    cfg = load_recipe(RECIPE, recipe(data, "data.tasks=[asr,st,mt,ocr,imt]", "model.ctc_weight=0.3",
                                     f"data.loss_weights=[{','.join(map(str, weights))}]"))
    task = UnifiedTask(cfg, tmp_path, quiet)
    model = task.build_model().eval()
    loss = task.loss_module(model, nullcontext())
    by_task = {t: [i for i, e in enumerate(task.valid) if e.task == t][:3] for t in range(5)}
    mixed = task.collator(False)([i for rows in by_task.values() for i in rows])
    assert (mixed.feats.size(0), mixed.src.size(0), mixed.images.size(0)) == (6, 3, 6)
    assert mixed.images.size(2) == HEIGHT and mixed.num_tokens == sum(
        len(task.valid[i].target) + 1 for rows in by_task.values() for i in rows)
    with torch.no_grad():
        total, nll = loss(*mixed.inputs())
        alone = [loss.per_task(*task.collator(False)(rows).inputs())[t] for t, rows in by_task.items()]
    assert torch.allclose(total, sum(w * a[0] for w, a in zip(weights, alone, strict=True)), rtol=1e-5)
    assert torch.allclose(nll, sum(a[1] for a in alone), rtol=1e-5)
    assert not torch.allclose(total, sum(a[0] for a in alone), rtol=1e-3)  # the weights do weigh


def test_batches_keep_the_padded_budget_of_three_parts() -> None:
    costs, part = [5, 9, 40, 41, 12, 60, 3, 30, 25, 70], [0, 0, 1, 1, 0, 1, 0, 1, 2, 2]
    batches = mixed_batches(list(range(10)) * 2, costs, part, max_tokens=100, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == sorted(list(range(10)) * 2)
    for b in batches:
        padded = sum(max((costs[i] for i in b if part[i] == p), default=0) * sum(part[i] == p for i in b)
                     for p in (0, 1, 2))
        assert padded <= 100 or len(b) == 1, b
    bools = [bool(p) for p in part[:8]]  # speech flags (True/False) batch as parts 1/0
    assert mixed_batches(list(range(8)), costs[:8], bools, max_tokens=100, seed=2, epoch=1) == mixed_batches(
        list(range(8)), costs[:8], part[:8], max_tokens=100, seed=2, epoch=1)
