"""Data-parallel scaling on this machine, and what a checkpoint costs.

Run:
    .venv/bin/python benchmarks/scaling.py                 # Multi30k recipe, 30 updates per setting
    .venv/bin/python benchmarks/scaling.py --updates 10    # quicker

Trains the Multi30k recipe through the real CLI (``transduce train``; under
``torchrun --standalone`` for several processes) with the same global batches:
1 process x T threads versus N processes x T/N threads (the cores are shared, so the honest
expectation on 2 cores is a ratio near or below 1: data parallelism adds all-reduces, not
cores). Throughput is target tokens per second of training time, read from the run's
metrics.jsonl and averaged over the log windows after the first. Then, in-process, times a
checkpoint save (``Trainer.save``: weights + Adam state + progress, fsync'd) against the mean
update time. Ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_training(procs: int, threads: int, data: Path, out: Path, updates: int, log_every: int) -> float:
    """Train ``updates`` updates; mean logged target tokens/s after the first log window."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [*(launcher if procs > 1 else [sys.executable]), "-m", "transduce", "train",
           str(REPO / "recipes" / "multi30k-en-de-transformer.yaml"), "--out", str(out), "--no-progress",
           "--set", f"data.dir={data}", "--set", f"train.max_updates={updates}",
           "--set", "train.update_freq=2", "--set", f"train.log_every={log_every}",
           "--set", "train.eval_every=100000", "--set", "train.eval_bleu=false", "--set", f"train.threads={threads}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if r["kind"] == "train"][1:]
    return sum(speeds) / max(len(speeds), 1)


def checkpoint_cost(data: Path, out: Path, threads: int) -> tuple[float, float]:
    """(seconds per update, seconds per checkpoint save) for the recipe model, in-process."""
    import torch

    from transduce.cli.config import load_recipe
    from transduce.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = load_recipe(REPO / "recipes" / "multi30k-en-de-transformer.yaml",
                      [f"data.dir={data}", "train.update_freq=2"])
    trainer = Trainer(cfg, out, log=lambda _: None, show_progress=False)
    groups = trainer._groups()
    trainer._update(next(groups))
    started = time.perf_counter()
    for _ in range(5):
        trainer._update(next(groups))
    step = (time.perf_counter() - started) / 5
    started = time.perf_counter()
    for _ in range(3):
        trainer.save()
    return step, (time.perf_counter() - started) / 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "multi30k"),
                        help="folder with train/val .en/.de files (.gz ok)")
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--procs", type=int, default=2, help="processes for the parallel row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads in all")
    args = parser.parse_args()
    data = Path(args.data)
    log_every = max(args.updates // 5, 1)
    with tempfile.TemporaryDirectory() as tmp:
        one = run_training(1, args.threads, data, Path(tmp) / "one", args.updates, log_every)
        many = run_training(args.procs, max(args.threads // args.procs, 1), data, Path(tmp) / "many",
                            args.updates, log_every)
        step, save = checkpoint_cost(data, Path(tmp) / "ckpt", args.threads)
    per_proc = max(args.threads // args.procs, 1)
    print(f"{'setting':36s} {'tgt tok/s':>10s} {'vs 1 proc':>10s}")
    print(f"{f'1 process x {args.threads} threads':36s} {one:10.0f} {1.0:9.2f}x")
    print(f"{f'{args.procs} processes x {per_proc} threads (gloo)':36s} {many:10.0f} {many / one:9.2f}x")
    print(f"checkpoint save {save * 1000:.0f} ms vs update {step * 1000:.0f} ms: {save / step:.2f} of an update "
          f"(every 200 updates: {100 * save / (200 * step):.2f}% of training time)")
    print(f"summary: {args.procs} processes train at {many / one:.2f}x the speed of 1 process on "
          f"{os.cpu_count()} cores; a checkpoint costs {save / step:.2f} updates")


if __name__ == "__main__":
    main()
