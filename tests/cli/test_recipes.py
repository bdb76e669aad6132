"""Every shipped recipe loads onto the dataclasses and builds a model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from transduce.cli.config import load_recipe
from transduce.data.tokenizer import PAD
from transduce.models.ctc import build_ctc
from transduce.models.rnn import build_rnn
from transduce.models.st import build_st
from transduce.models.transformer import build
from transduce.models.unified import build_unified
from transduce.speech_config import CTCDecodeConfig
from transduce.tasks.image_translation import build_image_st
from transduce.tasks.ocr import build_ocr

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").rglob("*.yaml"))


def test_recipes_exist() -> None:
    assert any(p.name == "tiny-copy.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_builds(path: Path) -> None:
    cfg = load_recipe(path)
    vocab = cfg.data.vocab_size
    if cfg.task == "ctc":
        model = build_ctc(cfg.model, vocab)
    elif cfg.task == "speech_translation":
        model = build_st(cfg.model, vocab, cfg.data.tgt_vocab_size, len(cfg.data.tgt_langs))
    elif cfg.task == "ocr":
        model = build_ocr(cfg, vocab)
    elif cfg.task == "image_translation":
        model = build_image_st(cfg, vocab, cfg.data.tgt_vocab_size)
    elif cfg.task == "unified":
        model = build_unified(cfg.model, vocab, 1 + len(cfg.data.langs))
    elif cfg.task == "rnn_translation":
        model = build_rnn(cfg.model, vocab, vocab, PAD)
    else:
        model = build(cfg.model, vocab, vocab, PAD)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_override_parses_yaml_values(tmp_path: Path) -> None:
    cfg = load_recipe(RECIPES[0], ["optim.lr=5e-4", "train.precision=bf16", "optim.betas=[0.9, 0.99]"])
    assert cfg.optim.lr == 5e-4 and cfg.train.precision == "bf16" and cfg.optim.betas == (0.9, 0.99)


def test_speech_decode_settings_describe_their_search() -> None:
    assert CTCDecodeConfig().describe() == "CTC greedy"
    fused = CTCDecodeConfig(beam=20, token_prune=8, lm="models/m/lm.arpa.gz", lm_weight=1.1, insertion_bonus=1.0)
    assert fused.describe() == ("CTC prefix beam 20 (8 tokens per frame) + n-gram LM lm.arpa.gz "
                                "(weight 1.1, insertion bonus 1)")
    assert "LM" not in replace(fused, lm_weight=0.0).describe()  # weight 0 switches the LM off
    assert CTCDecodeConfig(mode="rescore", beam=8, chunk_size=16, left_chunks=2).describe() == (
        "attention rescoring of the CTC n-best (ctc_weight 0.5), beam 8, chunks of 16 frames (2 left)")
