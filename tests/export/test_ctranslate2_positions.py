"""CTranslate2 export of Transformers with positions inside self-attention: shaw (CTranslate2's Shaw et al.
relative positions, our key table, zero value table) and rope (rotary, interleaved pairs). A small clipping
distance (2) makes the clipped distances matter at the lengths tested. Tiny models are trained in the test to
copy letters, so both searches end on EOS before the length limit (where they differ by design)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml
from testkit import letter_sentences, train_copy

from transduce.config import DataConfig, DecodeConfig, RunConfig, to_dict
from transduce.data.tokenizer import PAD, train_sentencepiece
from transduce.export import export_model
from transduce.models import transformer
from transduce.models.folder import write_model_folder
from transduce.translate import Translator

LETTERS = "abcdefghij"


def _folder(out: Path, positions: str) -> Path:
    torch.manual_seed(0)
    lines = letter_sentences(LETTERS, random.Random(1), 2000)
    tokenizer = train_sentencepiece(lines, out / "spm.model", vocab_size=16, model_type="word")
    cfg = transformer.TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=2, decoder_layers=2,
                                        dropout=0.0, positions=positions, max_relative=2, max_positions=64)
    model = transformer.build(cfg, len(tokenizer), len(tokenizer), PAD)
    train_copy(model, tokenizer.encode(lines), 200)
    run = RunConfig(task="translation", data=DataConfig(joint_vocab=True, tokenizer="word"), model=cfg,
                    decode=DecodeConfig(beam=4, len_penalty=1.0, max_len_a=1.0, max_len_b=4))
    write_model_folder(out, model.state_dict(), to_dict(run), [out / "spm.model"], {"updates": 200},
                       aliases=transformer.tied_aliases(cfg))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("positions", ["shaw", "rope"])
def test_export_scores_and_searches_as_ours(positions: str, tmp_path: Path) -> None:
    src = _folder(tmp_path / "model", positions)
    out = export_model(src, "ctranslate2", tmp_path / "ct2")
    parity = yaml.safe_load((out / "export.yaml").read_text())["parity"]
    assert parity["max_token_log_prob_diff"] < 1e-4  # teacher-forced, random sequences of 2 to 15 tokens
    sources = letter_sentences(LETTERS, random.Random(7), 24)
    ours, theirs = Translator.load(src), Translator.load(out)
    a, b = ours.search(sources, beam=4), theirs.search(sources, beam=4)
    copies = sum(text == source for text, source in zip(ours.translate(sources), sources, strict=True))
    assert copies >= len(sources) // 4  # trained enough to end its outputs with EOS
    assert [row[0].tokens for row in a] == [row[0].tokens for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        assert row_b[0].log_prob == pytest.approx(row_a[0].log_prob, abs=1e-3)
