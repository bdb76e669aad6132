"""Training speed of the real trainer (``transduce train``), side by side in one run.

Run (a few hundred updates per row; tens of minutes on 2 cores):
    .venv/bin/python benchmarks/train_speed.py --captions work/data/captions
Quick check (fewer updates, two repeats, today's code from git HEAD as the baseline):
    .venv/bin/python benchmarks/train_speed.py --updates 60 --repeats 2 --baseline HEAD --captions DIR
Without the captions data (no TTS voices): --synthetic-captions 2000 writes noise WAVs of TTS length for Multi30k
captions (benchmarks/synthetic_captions.py) and runs the captions row on them; its speed is real, its loss is not.

Rows (each a ``python -m transduce train`` subprocess on the recipe's data, ``--threads`` threads):
  mt       recipes/multi30k-en-de-transformer.yaml post-LN (the configuration of issue 23: 4+4 layers,
           d 128, FFN 256, dropout 0.3, shared embeddings, ~4k tokens per batch)
  mt-d512  the same recipe at d 512, FFN 2048, 8 heads (4+4 layers)
  captions recipes/captions-conformer-ctc.yaml (Conformer-CTC, 6 blocks, d 144) on --captions
in fp32, in bf16 where the CPU computes it natively (AMX or AVX512-BF16), and compiled (train.compile,
fp32). ``--baseline REV`` adds the fp32 rows run with the package as it is at git revision REV (extracted
with ``git archive`` into a temporary folder: the working tree is not touched), for before/after ratios.

Throughput: the median of the trainer's logged target tokens/s over the log windows after the first
(the first holds start-up and compile warm-up). Speech: audio seconds/s = target tokens/s x the audio
seconds per target token of the row's first batches. MFU: model FLOPs per target token, counted by
``torch.utils.flop_counter`` over real updates of the same trainer in this process, times tokens/s,
against a 2048^2 matmul peak timed in this run (fp32, or bf16 for bf16 rows).

fairseq: when the side environment exists (``benchmarks/side_envs.py fairseq``), fairseq-train runs the mt
configuration on the same data, encoded with the mt row's SentencePiece model, for the same number of
updates; its target tokens/s (wps, median over log windows after the first) and training loss (base 2)
at the last update are printed beside ours, with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import machine_line
from side_envs import peer_python, run_fairseq
from synthetic_captions import write_synthetic_captions

REPO = Path(__file__).resolve().parents[1]
MT_RECIPE = REPO / "recipes" / "multi30k-en-de-transformer.yaml"
CAPTIONS_RECIPE = REPO / "recipes" / "captions-conformer-ctc.yaml"
D512 = ["model.dim=512", "model.heads=8", "model.ffn_dim=2048"]


@dataclass
class Row:
    name: str
    recipe: Path
    sets: list[str]
    speech: bool = False
    first_run: Path | None = None
    """The row's first run: later runs reuse its SentencePiece models instead of training them again."""
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def rows(args: argparse.Namespace) -> list[Row]:
    data = ["data.dir=" + str(args.data), "model.pre_norm=false"]
    out = [Row("mt", MT_RECIPE, data), Row("mt-d512", MT_RECIPE, data + D512)]
    if args.captions:
        out.append(Row("captions", CAPTIONS_RECIPE, [f"data.dir={args.captions}"], speech=True))
    return [r for r in out if r.name in args.rows]


def variants(args: argparse.Namespace, native_bf16: bool) -> dict[str, list[str]]:
    """Variant name -> extra overrides; 'baseline' runs fp32 with the code of --baseline."""
    out: dict[str, list[str]] = {}
    if args.baseline:
        out["baseline"] = ["train.precision=fp32"]
    out["fp32"] = ["train.precision=fp32"]
    if native_bf16 or args.force_bf16:
        out["bf16"] = ["train.precision=bf16"]
    if not args.no_compile:
        out["compiled"] = ["train.precision=fp32", "train.compile=true"]
    return {k: v for k, v in out.items() if k == "fp32" or not args.variants or k in args.variants}


def extract(rev: str, into: Path) -> Path:
    """The ``transduce`` package at git revision ``rev`` in ``into`` (read-only use of git)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "transduce"], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    path = into / "archive.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into


def train(row: Row, extra: list[str], out: Path, args: argparse.Namespace, code: Path) -> dict[str, float]:
    """One ``transduce train`` run; throughput, loss and timings read from its metrics.jsonl."""
    sets = [*row.sets, *extra, f"train.max_updates={args.updates}", f"train.log_every={args.log_every}",
            "train.eval_every=1000000", "train.eval_bleu=false", f"train.threads={args.threads}",
            "data.num_workers=0" if not row.speech else "data.num_workers=1", "train.keep_last=1"]
    cmd = [sys.executable, "-m", "transduce", "train", str(row.recipe), "--out", str(out), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(code)}
    out.mkdir(parents=True)
    for model in row.first_run.glob("spm*.model") if row.first_run else []:
        shutil.copy(model, out / model.name)
    row.first_run = row.first_run or out
    started, cpu_before = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    cpu = _children_cpu() - cpu_before
    if proc.returncode:
        raise SystemExit(f"{row.name} {extra}: transduce train failed:\n{proc.stderr[-3000:]}")
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [e for e in logs if e["kind"] == "train"]
    speeds = [e["tokens_per_s"] for e in train_logs[1:]] or [train_logs[0]["tokens_per_s"]]
    warm = next((line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "warm-up" in line), "")
    return {"tok_s": statistics.median(speeds), "loss": train_logs[-1]["loss"], "cpu_s": cpu,
            "tok_cpu_s": sum(e["tokens"] for e in train_logs) / cpu,
            "wall": time.perf_counter() - started, "warmup": warm}  # type: ignore[dict-item]


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: on a shared machine, work done per CPU second
    is steadier than per wall second."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a size^2 matmul (median of ``reps``)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times)


def flops_per_token(row: Row, run_dir: Path, args: argparse.Namespace, updates: int = 3) -> tuple[float, float]:
    """(model FLOPs per target token, audio seconds per target token or 0) over ``updates`` real updates of
    the trainer, on the data of ``run_dir`` (its tokenizers are reused)."""
    from torch.utils.flop_counter import FlopCounterMode

    from transduce.cli.config import load_recipe
    from transduce.train.trainer import Trainer

    cfg = load_recipe(row.recipe, [*row.sets, "train.precision=fp32", f"train.threads={args.threads}"])
    trainer = Trainer(cfg, run_dir, log=lambda _: None, show_progress=False)
    groups = trainer._groups()
    flops = tokens = seconds = 0.0
    for _ in range(updates):
        group = next(groups)
        with FlopCounterMode(display=False) as counter:
            trainer._update(group)
        flops += counter.get_total_flops()
        tokens += sum(b.num_tokens for b in group)
        if row.speech:  # frames of 10 ms, after speed perturbation: the audio the model really saw
            seconds += sum(float(b.feat_lens.sum()) for b in group) * 0.01  # type: ignore[attr-defined]
    return flops / tokens, seconds / tokens


def _listing(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['tok_s']:.0f}" for r in runs)


def report(row: Row, names: list[str], peaks: dict[str, float], per_token: tuple[float, float]) -> None:
    flop_tok, sec_tok = per_token
    print(f"\n{row.name}: {flop_tok / 1e6:.1f} MFLOP per target token" +
          (f", {sec_tok:.3f} audio s per target token" if row.speech else ""))
    unit = "audio s/s" if row.speech else "target tok/s"
    base = statistics.median(r["tok_s"] for r in row.results["fp32"])
    for name in names:
        runs = row.results[name]
        tok_s = statistics.median(r["tok_s"] for r in runs)
        speed = tok_s * sec_tok if row.speech else tok_s
        peak = peaks["bf16" if name == "bf16" else "fp32"]
        mfu = 100 * flop_tok * tok_s / peak
        loss = statistics.median(r["loss"] for r in runs)
        per_cpu = statistics.median(r["tok_cpu_s"] for r in runs)
        base_cpu = statistics.median(r["tok_cpu_s"] for r in row.results["fp32"])
        print(f"  {name:9s} {speed:10,.1f} {unit}  {tok_s / base:5.2f}x fp32  MFU {mfu:4.1f}%  "
              f"train loss {loss:.3f}  runs {_listing(runs)} tok/s; {per_cpu:,.0f} tok per CPU-s "
              f"({per_cpu / base_cpu:.2f}x fp32, start-up included)")
        if "baseline" in row.results and name != "baseline":
            before = row.results["baseline"]
            ratio = tok_s / statistics.median(r["tok_s"] for r in before)
            ratio_cpu = per_cpu / statistics.median(r["tok_cpu_s"] for r in before)
            print(f"            {ratio:.2f}x the baseline's throughput, {ratio_cpu:.2f}x per CPU second")
        for r in runs:
            if r.get("warmup"):
                print(f"            {r['warmup']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "work" / "data" / "multi30k")
    parser.add_argument("--captions", type=Path, help="captions data folder (transduce data captions)")
    parser.add_argument("--synthetic-captions", type=int, metavar="N",
                        help="without --captions: N synthetic captions utterances (noise WAVs of TTS length, "
                             "benchmarks/synthetic_captions.py) for the captions row; speed only")
    parser.add_argument("--rows", nargs="+", default=["mt", "mt-d512", "captions"])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="runs per row and variant (medians reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", metavar="REV", help="also run fp32 with the package at git revision REV")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--variants", nargs="+", help="run only these besides fp32 (baseline, bf16, compiled)")
    parser.add_argument("--force-bf16", action="store_true", help="bf16 rows even without native bf16")
    parser.add_argument("--no-fairseq", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transduce.train.precision import detect_hardware, native_bf16

    unit = native_bf16(detect_hardware(torch.device("cpu")))
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(machine_line(args.threads))
    print(f"native bf16: {unit or 'none'}; matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s ({peaks['bf16'] / peaks['fp32']:.1f}x)")
    chosen = variants(args, bool(unit))
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        work = Path(tmp)
        code = {"current": REPO, "baseline": extract(args.baseline, work / "baseline") if args.baseline else REPO}
        if args.synthetic_captions and not args.captions:
            args.captions = write_synthetic_captions(work / "captions", args.synthetic_captions)
        table = rows(args)
        for repeat in range(args.repeats):
            for row in table:
                order = list(chosen) if repeat % 2 == 0 else list(reversed(chosen))  # alternate the order
                for name in order:
                    out = work / f"{row.name}-{name}-{repeat}"
                    result = train(row, chosen[name], out, args, code["baseline" if name == "baseline" else "current"])
                    row.results.setdefault(name, []).append(result)
                    print(f"[{row.name} {name} #{repeat}] {result['tok_s']:.0f} tok/s, "
                          f"{result['tok_cpu_s']:.0f} tok per CPU-s, loss {result['loss']:.3f}, {result['wall']:.0f} s",
                          flush=True)
        for row in table:
            report(row, list(chosen), peaks, flops_per_token(row, work / f"{row.name}-fp32-0", args))
        mt = next((r for r in table if r.name == "mt"), None)
        fairseq = None if args.no_fairseq else peer_python("fairseq")
        if mt is not None and fairseq is not None:
            theirs = [run_fairseq(fairseq, args.data, work / "mt-fp32-0" / "spm.model", work / f"fairseq-{i}",
                                  updates=args.updates, threads=args.threads, log_every=args.log_every)
                      for i in range(args.repeats)]
            ours = statistics.median(r["tok_s"] for r in mt.results["fp32"])
            our_loss = statistics.median(r["loss"] for r in mt.results["fp32"])
            their_tok = statistics.median(t["tok_s"] for t in theirs)
            their_loss = statistics.median(t["loss"] for t in theirs)
            print(f"\nfairseq-train, mt configuration, fp32, {args.updates} updates, same data and SentencePiece "
                  f"model: {their_tok:,.0f} target tok/s (runs {_listing(theirs)}), "
                  f"train loss {their_loss:.3f}; transduce {ours:,.0f} tok/s ({ours / their_tok:.2f}x), "
                  f"train loss {our_loss:.3f} ({our_loss - their_loss:+.3f})")
        elif mt is not None:
            print("\nfairseq: no side environment (create it with: .venv/bin/python benchmarks/side_envs.py fairseq)")


if __name__ == "__main__":
    main()
