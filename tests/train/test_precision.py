"""fp32 and bf16 autocast training (fp32 master weights) both learn the copy task; fp16 with loss
scaling skips and counts overflowing steps (fp16 autocast runs on CPU too, so this is tested here)."""

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


def _tiny_copy(tmp_path: Path, precision: str, updates: int) -> RunConfig:
    data = write_toy(tmp_path / "data", task="copy", train=200, valid=10, test=0)
    return RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1, dropout=0.0),
        optim=OptimConfig(lr=1e-2, warmup=10),
        train=TrainConfig(max_tokens=512, max_updates=updates, eval_every=updates, precision=precision, threads=1,
                          eval_bleu=False),
    )


def test_fp16_overflow_skips_the_step_and_counts_it(tmp_path: Path) -> None:
    """An absurd loss scale makes fp16 gradients overflow: those steps change no weight, are
    counted, and the scaler backs off until updates go through; its state is checkpointed."""
    trainer = Trainer(_tiny_copy(tmp_path, "fp16", 3), tmp_path / "run", log=lambda _: None, show_progress=False)
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    group = next(trainer._groups())
    assert trainer._update(group) == {}  # overflow: skipped
    assert trainer.state.skipped_overflow == 1 and trainer.state.update == 0
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    trainer.fit()
    assert trainer.state.update == 3 and trainer.state.skipped_overflow > 1
    assert trainer.precision.scaler.get_scale() < 2.0**100
    payload = torch.load(tmp_path / "run" / "checkpoints" / "step_3.pt", weights_only=True)
    assert payload["scaler"]["scale"] == trainer.precision.scaler.get_scale()
