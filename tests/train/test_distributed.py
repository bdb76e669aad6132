"""Data parallel training under torchrun (gloo, 2 CPU processes) equals single-process training
on the same global batches, and checkpoints move between world sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transduce.data.toy import write_toy
from transduce.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes" / "tiny-copy.yaml")


def train(run: Path, data: Path, updates: int, *, procs: int = 1, resume: bool = False,
          parallel: str = "ddp") -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [*(launcher if procs > 1 else [sys.executable]), "-m", "transduce", "train", RECIPE, "--out", str(run),
           "--no-progress", "--set", f"data.dir={data}", "--set", f"train.max_updates={updates}",
           "--set", "train.update_freq=2", "--set", "train.max_tokens=512", "--set", "train.eval_every=2",
           "--set", "train.eval_bleu=false", "--set", "train.threads=1",
           "--set", f"train.parallel={parallel}"]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def checkpoint(run: Path, update: int) -> dict:
    """step_N.pt or the sharded step_N/ folder, gathered."""
    folder = run / "checkpoints"
    path = folder / f"step_{update}" if (folder / f"step_{update}").is_dir() else folder / f"step_{update}.pt"
    return ckpt.load(path)


def weights(run: Path, update: int) -> dict[str, torch.Tensor]:
    return checkpoint(run, update)["model"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("ddp") / "data", train=600, valid=20, test=0)


@pytest.fixture(scope="module")
def single(tmp_path_factory, data: Path) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    train(run, data, 4)
    return run


def test_ddp_equals_single_process(tmp_path: Path, data: Path, single: Path) -> None:
    train(tmp_path / "ddp", data, 4, procs=2)
    assert_close(weights(tmp_path / "ddp", 4), weights(single, 4))
    progress = checkpoint(tmp_path / "ddp", 4)["progress"]
    assert progress["batch_in_epoch"] == checkpoint(single, 4)["progress"]["batch_in_epoch"]
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"valid"' in line]) == 2  # written once, by rank 0


def test_resume_on_another_world_size(tmp_path: Path, data: Path, single: Path) -> None:
    run = tmp_path / "run"
    train(run, data, 2, procs=2)
    train(run, data, 4, procs=1, resume=True)
    assert_close(weights(run, 4), weights(single, 4))


def test_fsdp_equals_single_and_resumes_on_one_rank(tmp_path: Path, data: Path, single: Path) -> None:
    run = tmp_path / "fsdp"
    train(run, data, 2, procs=2, parallel="fsdp")
    assert (run / "checkpoints" / "step_2").is_dir()  # a torch.distributed.checkpoint folder
    saved = checkpoint(run, 2)
    assert_close(saved["model"], weights(single, 2))
    train(run, data, 4, procs=1, resume=True)  # 2 ranks -> 1 rank
    assert_close(weights(run, 4), weights(single, 4))
