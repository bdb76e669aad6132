"""N updates + resume + M updates == N + M updates uninterrupted (parameters, optimizer, data)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from transduce.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.models.transformer import TransformerConfig
from transduce.train.trainer import Trainer


def config(data: Path, max_updates: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1, dropout=0.2),
        optim=OptimConfig(lr=1e-3, warmup=5),
        train=TrainConfig(max_tokens=256, max_updates=max_updates, update_freq=2, eval_every=1000,
                          eval_bleu=False, log_every=5, seed=3),
    )


def quiet(_: str) -> None:
    pass


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    data = write_toy(tmp_path / "data", train=300, valid=20, test=0)
    straight = Trainer(config(data, 12), tmp_path / "a", log=quiet, show_progress=False)
    straight.fit()
    first = Trainer(config(data, 7), tmp_path / "b", log=quiet, show_progress=False)
    first.fit()
    resumed = Trainer(config(data, 12), tmp_path / "b", log=quiet, show_progress=False)
    assert resumed.resume()
    assert resumed.state.update == 7
    resumed.fit(resume=True)
    assert resumed.state.update == straight.state.update == 12
    assert (resumed.state.epoch, resumed.state.batch_in_epoch) == (straight.state.epoch, straight.state.batch_in_epoch)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=False):
        assert torch.equal(a, b), name
    exp_a = straight.optimizer.state_dict()["state"]
    exp_b = resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(exp_a[k]["exp_avg"], exp_b[k]["exp_avg"]) for k in exp_a)


def test_unreadable_newest_checkpoint_is_skipped(tmp_path: Path) -> None:
    data = write_toy(tmp_path / "data", train=200, valid=20, test=0)
    cfg = config(data, 4)
    cfg = replace(cfg, train=replace(cfg.train, eval_every=2))
    Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False).fit()
    (tmp_path / "run" / "checkpoints" / "step_4.pt").write_bytes(b"truncated")
    messages: list[str] = []
    trainer = Trainer(cfg, tmp_path / "run", log=messages.append, show_progress=False)
    assert trainer.resume()
    assert trainer.state.update == 2
    assert any("skipping unreadable checkpoint" in m for m in messages)
