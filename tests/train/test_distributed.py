"""Data parallel training under torchrun (gloo, 2 CPU processes) equals single-process training
on the same global batches, and checkpoints move between world sizes."""

from __future__ import annotations

import json
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


# ---- FSDP for every model family ---------------------------------------------------------------------------
# One torchrun launch (this file run as a script, see the end) trains an RNN translation model (2 updates, then a
# sharded resume to 4) and a hybrid CTC/attention speech model (2 updates) under FSDP; the single-process
# references train in this process.

def family_argv(family: str, data: Path, run: Path, updates: int, *, parallel: str = "fsdp") -> list[str]:
    """``transduce train`` arguments of a tiny run of ``family`` (rnn or hybrid). 4 batches an update: on 2 ranks
    each accumulates 2 before the gradients are reduced. Every update stays within the first epoch (its last
    batches depend on the world size)."""
    common = ["--out", str(run), "--no-progress", "--set", f"data.dir={data}", "--set", f"train.max_updates={updates}",
              "--set", "train.update_freq=4", "--set", "train.eval_every=2", "--set", "train.log_every=1",
              "--set", "train.threads=1", "--set", f"train.parallel={parallel}"]
    if family == "rnn":
        return [str(ROOT / "recipes" / "tiny-reverse-rnn.yaml"), *common, "--set", "train.max_tokens=256",
                "--set", "train.eval_bleu=false"]
    # chunk sizes of dynamic chunk training come from each rank's own RNG: full context, as in one process;
    # the attention key biases get only rounding noise as gradient (softmax ignores a shift), which Adam's
    # default eps 1e-8 would blow up into lr-sized steps that differ with the summation order
    return [str(ROOT / "recipes" / "tiny-tones-hybrid.yaml"), *common, "--set", "train.max_tokens=1000",
            "--set", "model.dynamic_chunk=false", "--set", "optim.eps=1e-6"]


@pytest.fixture(scope="module")
def speech_data(tmp_path_factory) -> Path:
    from transduce.data.tones import write_tones

    folder = tmp_path_factory.mktemp("tones") / "data"
    write_tones(folder, train=60, valid=8)
    return folder


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory, data: Path, speech_data: Path) -> Path:
    base = tmp_path_factory.mktemp("fsdp_families")
    plan = [family_argv("rnn", data, base / "rnn", 2), [*family_argv("rnn", data, base / "rnn", 4), "--resume"],
            family_argv("hybrid", speech_data, base / "hybrid", 2)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           json.dumps(plan)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return base


def single_process(family: str, data: Path, run: Path, updates: int) -> Path:
    from transduce.cli.main import main

    assert main(["train", *family_argv(family, data, run, updates, parallel="ddp")]) == 0
    return run


def assert_same_losses(run: Path, reference: Path, updates: int) -> None:
    """Every update of both runs logged the same tokens, loss and nll (metrics.jsonl, written by rank 0)."""
    def logged(folder: Path) -> tuple[list[tuple[int, float]], list[float]]:
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r["kind"] == "train"]
        return [(r["update"], r["tokens"]) for r in rows], [x for r in rows for x in (r["loss"], r["nll"])]

    (steps, losses), (ref_steps, ref_losses) = logged(run), logged(reference)
    assert [u for u, _ in steps] == list(range(1, updates + 1)) and steps == ref_steps
    assert losses == pytest.approx(ref_losses, rel=1e-6)


def test_fsdp_rnn_equals_single_process_and_resumes_sharded(fsdp_runs: Path, data: Path, tmp_path: Path) -> None:
    single = single_process("rnn", data, tmp_path / "single", 4)
    sharded = fsdp_runs / "rnn"
    assert (sharded / "checkpoints" / "step_2").is_dir() and (sharded / "checkpoints" / "step_4").is_dir()
    assert_same_losses(sharded, single, 4)  # updates 3 and 4 after the resume
    assert_close(weights(sharded, 2), weights(single, 2))
    assert_close(weights(sharded, 4), weights(single, 4))


def test_fsdp_hybrid_ctc_attention_equals_single_process(fsdp_runs: Path, speech_data: Path, tmp_path: Path) -> None:
    single = single_process("hybrid", speech_data, tmp_path / "single", 2)
    sharded = fsdp_runs / "hybrid"
    saved = checkpoint(sharded, 2)
    assert {"decoder.layers.0.self_attn.kv_proj.weight", "reverse_decoder.layers.0.self_attn.kv_proj.weight",
            "normalizer.mean"} <= saved["model"].keys()
    assert_same_losses(sharded, single, 2)
    assert_close(saved["model"], weights(single, 2))


if __name__ == "__main__":  # a torchrun worker: run each `transduce train` argument list of argv[1] in turn
    from transduce.cli.main import main

    for argv in json.loads(sys.argv[1]):
        if main(["train", *argv]) != 0:
            sys.exit(1)
