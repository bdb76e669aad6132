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

from transduce.config import DataConfig, DecodeConfig, RunConfig, to_dict
from transduce.data.batching import pad
from transduce.data.tokenizer import BOS, EOS, PAD, train_sentencepiece
from transduce.export import export_model
from transduce.models import transformer
from transduce.models.folder import write_model_folder
from transduce.translate import Translator

LETTERS = "abcdefghij"


def _sentences(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 9))) for _ in range(count)]


def _train_copy(model: torch.nn.Module, ids: list[list[int]], steps: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        batch = rng.sample(ids, 32)
        src = pad([s + [EOS] for s in batch])
        tgt_in, tgt_out = pad([[BOS, *s] for s in batch]), pad([[*s, EOS] for s in batch])
        logits = model(src, torch.tensor([len(s) + 1 for s in batch]), tgt_in)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _folder(out: Path, positions: str) -> Path:
    torch.manual_seed(0)
    lines = _sentences(random.Random(1), 2000)
    tokenizer = train_sentencepiece(lines, out / "spm.model", vocab_size=16, model_type="word")
    cfg = transformer.TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=2, decoder_layers=2,
                                        dropout=0.0, positions=positions, max_relative=2, max_positions=64)
    model = transformer.build(cfg, len(tokenizer), len(tokenizer), PAD)
    _train_copy(model, tokenizer.encode(lines), 200)
    run = RunConfig(task="translation", data=DataConfig(joint_vocab=True, tokenizer="word"), model=cfg,
                    decode=DecodeConfig(beam=4, len_penalty=1.0, max_len_a=1.0, max_len_b=4))
    write_model_folder(out, model.state_dict(), to_dict(run), [out / "spm.model"], {"updates": 200},
                       aliases=transformer.tied_aliases(cfg))
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("positions", ["shaw", "rope"])
def test_export_scores_and_searches_as_ours(positions: str, tmp_path: Path) -> None:
    src = _folder(tmp_path / "model", positions)
    out = export_model(src, "ctranslate2", tmp_path / "ct2")
    parity = yaml.safe_load((out / "export.yaml").read_text())["parity"]
    assert parity["max_token_log_prob_diff"] < 1e-4  # teacher-forced, random sequences of 2 to 15 tokens
    sources = _sentences(random.Random(7), 24)
    ours, theirs = Translator.load(src), Translator.load(out)
    a, b = ours.search(sources, beam=4), theirs.search(sources, beam=4)
    copies = sum(text == source for text, source in zip(ours.translate(sources), sources, strict=True))
    assert copies >= len(sources) // 4  # trained enough to end its outputs with EOS
    assert [row[0].tokens for row in a] == [row[0].tokens for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        assert row_b[0].log_prob == pytest.approx(row_a[0].log_prob, abs=1e-3)
