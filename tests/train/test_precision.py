"""bf16 autocast (fp32 master weights) and fp32 training both learn the copy task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transduce.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.models.transformer import TransformerConfig
from transduce.train.trainer import Trainer


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_copy_task_converges(tmp_path: Path, precision: str) -> None:
    data = write_toy(tmp_path / "data", task="copy", train=2000, valid=50, test=0)
    cfg = RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1, dropout=0.0),
        optim=OptimConfig(lr=1e-2, warmup=30),
        train=TrainConfig(max_tokens=1024, max_updates=300, eval_every=300, precision=precision, threads=1),
    )
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None, show_progress=False)
    trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    dev = [h for h in trainer.state.history if h["kind"] == "valid"][-1]
    assert dev["exact_match"] >= 80.0, dev
    assert dev["nll"] < 0.5, dev
