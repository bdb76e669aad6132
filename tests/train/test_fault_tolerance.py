"""Signals, SIGKILL during a checkpoint write, non-finite losses, incompatible resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import transduce.train.loss as loss_module
from transduce.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.models.transformer import TransformerConfig
from transduce.train import checkpoint as ckpt
from transduce.train.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[2]


def config(data: Path, max_updates: int = 6, dim: int = 32) -> RunConfig:
    return RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=dim, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1),
        optim=OptimConfig(lr=1e-3, warmup=5),
        train=TrainConfig(max_tokens=256, max_updates=max_updates, eval_every=3, eval_bleu=False, max_nonfinite=3),
    )


def quiet(_: str) -> None:
    pass


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_toy(tmp_path / "data", train=200, valid=10, test=0)


def test_sigterm_checkpoints_and_exits_zero(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "transduce", "train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(run),
           "--no-progress", "--set", f"data.dir={data}", "--set", "train.max_updates=100000",
           "--set", "train.log_every=1", "--set", "train.eval_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "SIGTERM: stopped after update" in out and "--resume" in out
    saved = ckpt.step_checkpoints(run / "checkpoints")
    assert saved and (run / "checkpoints" / "latest").read_text().strip() == saved[-1].name
    assert ckpt.load_verified(saved[-1])["progress"]["update"] >= 3


WRITER = """
import sys, torch
from transduce.train.checkpoint import atomic_save
payload = {"model": {"w": torch.randn(2_000_000)}, "optimizer": {}, "progress": {}, "rng": torch.get_rng_state(),
           "config": {}}
print("ready", flush=True)
i = 0
while True:
    payload["progress"] = {"i": i}
    atomic_save(payload, sys.argv[1])
    i += 1
"""


def test_sigkill_during_write_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "step_1.pt"
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        while not target.exists():
            time.sleep(0.01)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        payload = ckpt.load_verified(target)  # never a torn file: old or new, complete
        assert payload["model"]["w"].numel() == 2_000_000


def test_nonfinite_loss_is_skipped_then_stops(tmp_path: Path, data: Path, monkeypatch) -> None:
    trainer = Trainer(config(data), tmp_path / "run", log=quiet, show_progress=False)
    real = loss_module.projected_label_smoothed_nll
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, nll = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), nll) if calls["n"] == 2 else (loss, nll)

    monkeypatch.setattr(loss_module, "projected_label_smoothed_nll", poisoned)
    groups = trainer._groups()
    trainer._update(next(groups))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert trainer._update(next(groups)) == {}
    assert trainer.state.skipped_nonfinite == 1 and trainer.state.update == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    trainer._update(next(groups))
    assert trainer.state.update == 2

    monkeypatch.setattr(loss_module, "projected_label_smoothed_nll",
                        lambda *a, **k: (lambda loss, nll: (loss * float("nan"), nll))(*real(*a, **k)))
    with pytest.raises(TrainingError, match="not finite for 3 updates in a row"):
        for _ in range(3):
            trainer._update(next(groups))


def test_resume_with_another_model_names_the_keys(tmp_path: Path, data: Path) -> None:
    Trainer(config(data, max_updates=3), tmp_path / "run", log=quiet, show_progress=False).fit()
    other = Trainer(config(data, max_updates=6, dim=48), tmp_path / "run", log=quiet, show_progress=False)
    with pytest.raises(ConfigError, match=r"model\.dim: 32 in checkpoint, 48 now"):
        other.resume()
    longer = config(data, max_updates=6)
    longer = replace(longer, optim=replace(longer.optim, lr=5e-4))  # schedule changes are allowed
    assert Trainer(longer, tmp_path / "run", log=quiet, show_progress=False).resume()


def test_resume_from_a_checkpoint_older_than_a_config_field(tmp_path: Path, data: Path) -> None:
    """A model field added after the checkpoint was written counts as its default; any other value is a change."""
    Trainer(config(data, max_updates=3), tmp_path / "run", log=quiet, show_progress=False).fit()
    newest = ckpt.step_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    payload = torch.load(newest)
    del payload["config"]["model"]["dropout"]  # as if written before the field existed
    torch.save(payload, newest)
    assert Trainer(config(data, max_updates=6), tmp_path / "run", log=quiet, show_progress=False).resume()
    changed = config(data, max_updates=6)
    changed = replace(changed, model=replace(changed.model, dropout=changed.model.dropout / 2))
    with pytest.raises(ConfigError, match=r"model\.dropout: None in checkpoint"):
        Trainer(changed, tmp_path / "run", log=quiet, show_progress=False).resume()
