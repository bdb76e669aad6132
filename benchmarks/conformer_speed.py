"""Training speed of the captions Conformer-CTC model: the code of a baseline git revision against today's, in one
process, on the same synthetic batches, updates alternating between the two.

Run (quiet machine, 1 thread):
    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conformer_speed.py
Quick check:
    .venv/bin/python benchmarks/conformer_speed.py --updates 4

The model is recipes/captions-conformer-ctc.yaml's (6 Conformer blocks, d 144, 4 heads, kernel 15, 32-channel
subsampling, dropout 0.1, utterance mean norm + global CMVN, 48 characters). The batches are what the recipe's
batching makes of utterances of 2-6 s (uniform; ``make_speech_batches`` with train.max_tokens = 16,000 padded
frames per batch): random 80-bin features and random 12-characters-per-second transcripts (the model's cost
does not depend on the content; the captions TTS data need not be on the machine).

The baseline package (default 8364f7a, before the issue 23 speed work) is extracted with ``git archive`` and
imported under its own name, so both models live in one process: same initial weights, same batches, the same
seed before each update, one update of each in turn. An update is forward + CTC loss + backward + clip norm 5
+ AdamW as each revision's trainer runs it (the baseline's AdamW loops over parameters, today's uses foreach).
Time is CPU seconds of this process (``time.process_time``), steadier than wall time on a shared machine. The
training losses of the two are printed side by side: with the same seed they agree to float rounding.
"""

from __future__ import annotations

import argparse
import importlib
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "captions-conformer-ctc.yaml"
VOCAB = 48

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def extract(rev: str, into: Path) -> Path:
    """The ``transduce`` package at git revision ``rev`` under ``into`` (git archive: the work tree is untouched)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "transduce"], check=True,
                             capture_output=True).stdout
    path = into / "archive.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into


def import_package(root: Path) -> dict[str, ModuleType]:
    """Import ``transduce`` from ``root`` and take it out of ``sys.modules`` again, so that another copy of the
    package can be imported next; the returned modules keep working (their globals hold their own imports)."""
    for name in [n for n in sys.modules if n == "transduce" or n.startswith("transduce.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        names = ["transduce.cli.config", "transduce.tasks.speech", "transduce.train.loss",
                 "transduce.data.speech_batching"]
        modules = {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "transduce" or n.startswith("transduce.")]:
            del sys.modules[name]
    return modules


class Side:
    """One revision's model, loss module and optimizer, updated on given batches."""

    def __init__(self, name: str, modules: dict[str, ModuleType], *, foreach: bool,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
        from contextlib import nullcontext

        self.name = name
        cfg = modules["config"].load_recipe(RECIPE)
        self.model = modules["speech"]._build(cfg, VOCAB, None)
        if weights is not None:
            self.model.load_state_dict(weights)
        self.model.train()
        self.loss = modules["loss"].CTCLoss(self.model, nullcontext())
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                                           foreach=foreach)
        self.clip = cfg.train.clip_norm
        self.seconds: list[float] = []
        self.losses: list[float] = []

    def update(self, batch: Batch, seed: int) -> None:
        torch.manual_seed(seed)
        started = time.process_time()
        loss, _ = self.loss(*batch)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.seconds.append(time.process_time() - started)
        self.losses.append(float(loss.detach()) / float(batch[3].sum()))


def synthetic_batches(count: int, seed: int, max_frames: int, make_batches: Callable[..., list[list[int]]]
                      ) -> list[Batch]:
    """``count`` batches as the recipe's batching makes them from 2-6 s utterances (10 ms frames)."""
    rng = random.Random(seed)
    frames = [int(rng.uniform(2.0, 6.0) * 100) - 1 for _ in range(40 * count)]  # snip-edges 25 ms / 10 ms
    generator = torch.Generator().manual_seed(seed)
    out = []
    for indices in make_batches(frames, max_frames=max_frames, seed=seed, epoch=0)[:count]:
        lens = torch.tensor([frames[i] for i in indices])
        feats = torch.randn(len(indices), int(lens.max()), 80, generator=generator)
        target_lens = (lens * 0.12).long()  # 12 characters per second
        targets = torch.randint(1, VOCAB, (len(indices), int(target_lens.max())), generator=generator)
        out.append((feats, lens, targets, target_lens))
    return out


CATEGORIES = {  # profiler op name -> what it is
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_backward"),
    "dropout masks": ("aten::bernoulli_",),
    "copies, fills": ("aten::copy_", "aten::fill_", "aten::zero_", "aten::cat", "aten::constant_pad_nd"),
    "softmax": ("aten::_softmax", "aten::_softmax_backward_data"),
    "CTC loss": ("aten::_ctc_loss", "aten::_ctc_loss_backward"),
}


def profile_update(side: Side, batch: Batch, seed: int) -> dict[str, float]:
    """Self CPU milliseconds of one update by operation category (``CATEGORIES``; the rest is "other")."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        side.update(batch, seed)
    out = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for event in prof.key_averages():
        kind = next((k for k, names in CATEGORIES.items() if event.key in names), "other")
        out[kind] += event.self_cpu_time_total / 1000
    return out


def print_profiles(base: Side, now: Side, batches: list[Batch], seed: int) -> None:
    """Profile one update of each side per batch, alternating, and print the sums by category."""
    before, after = dict.fromkeys([*CATEGORIES, "other"], 0.0), dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for i, batch in enumerate(batches):
        for side, sums in ((base, before), (now, after))[:: 1 if i % 2 == 0 else -1]:
            for kind, ms in profile_update(side, batch, seed + i).items():
                sums[kind] += ms / len(batches)
    total_before, total_after = sum(before.values()), sum(after.values())
    print(f"\nan update under torch.profiler, mean of {len(batches)} (self CPU ms, share of the update): "
          f"{base.name} -> {now.name}")
    for kind in before:
        print(f"  {kind:14s} {before[kind]:7.0f} ms {100 * before[kind] / total_before:5.1f}%  ->  "
              f"{after[kind]:7.0f} ms {100 * after[kind] / total_after:5.1f}%")
    print(f"  {'total':14s} {total_before:7.0f} ms         ->  {total_after:7.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="8364f7a", help="git revision to compare with (default 8364f7a)")
    parser.add_argument("--updates", type=int, default=12, help="timed updates per side (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile one update of each by op category")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import machine_line

    print(machine_line(args.threads))
    with tempfile.TemporaryDirectory(prefix="conformer_speed_") as tmp:
        base_modules = import_package(extract(args.baseline, Path(tmp)))
        now_modules = import_package(REPO)
    now = Side("today", now_modules, foreach=True)
    base = Side(f"baseline {args.baseline}", base_modules, foreach=False, weights=now.model.state_dict())
    batches = synthetic_batches(args.updates + 1, args.seed, 16_000, now_modules["speech_batching"].make_speech_batches)
    for i, batch in enumerate(batches):
        pair = (base, now) if i % 2 == 0 else (now, base)  # alternate who goes first
        for side in pair:
            side.update(batch, args.seed + i)
    audio = sum(float(b[1].sum()) * 0.01 for b in batches[1:])
    print(f"{len(batches) - 1} timed updates per side, {audio / (len(batches) - 1):.0f} audio s per update "
          f"(batches of {min(len(b[1]) for b in batches)}-{max(len(b[1]) for b in batches)} utterances)")
    speeds = {}
    for side in (base, now):
        cpu = sum(side.seconds[1:])
        speeds[side.name] = audio / cpu
        print(f"  {side.name:18s} {audio / cpu:7.1f} audio s per CPU s "
              f"({cpu / (len(batches) - 1):.2f} CPU s per update)")
    per_update = [b / n for b, n in zip(base.seconds[1:], now.seconds[1:], strict=True)]
    print(f"  ratio {speeds[now.name] / speeds[base.name]:.2f}x "
          f"(per update: median {statistics.median(per_update):.2f}x, "
          f"range {min(per_update):.2f}-{max(per_update):.2f}x)")
    drift = max(abs(a - b) for a, b in zip(base.losses, now.losses, strict=True))
    print(f"  training loss per token, baseline vs today: {base.losses[0]:.5f} vs {now.losses[0]:.5f} (first), "
          f"{base.losses[-1]:.5f} vs {now.losses[-1]:.5f} (last); largest difference {drift:.2e}")
    if args.profile:  # after the timed updates: three more updates each, profiled
        print_profiles(base, now, batches[1:4], args.seed)


if __name__ == "__main__":
    main()
