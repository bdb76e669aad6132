"""Training speed of the Multi30k en-de model on CPU: target tokens/s, fused-loss speedup, MFU.

Run (full size, a few minutes on 2 cores):
    .venv/bin/python benchmarks/mt_train.py
Quick check:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mt_train.py --threads 1 --steps 3 --warmup 1

Two model configurations, "recipe" (recipes/multi30k-en-de-transformer.yaml: d 128, 4 heads,
ffn 256, 4+4 layers, dropout 0.3, pre-LN, shared embeddings) and "wu-tiny" (the same sizes,
post-LN, as fairseq's transformer_tiny_wu2021), are trained with Adam on the same real
Multi30k token-budget batches (joint BPE 8000, --max-tokens per batch) in three ways:
  naive  fp32  logits = model(src, src_lens, tgt_in), then F.cross_entropy(label_smoothing=0.1):
               plain autograd, the baseline row of each configuration;
  fused  fp32  model.features + projected_label_smoothed_nll, as transduce's trainer does;
  fused  bf16  the same under bf16 autocast (--bf16-steps; CPUs without native bf16 matmul,
               such as AVX2-only ones, run it hundreds of times slower, so it is capped).
Prints target tokens/s, each row's ratio to its configuration's naive row, and model FLOP
utilization against 2048x2048 fp32 and bf16 matmul peaks timed in the same run (FLOP
formula: ``train_flops``). Collation and tokenization are outside the timed loop.
Ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (
    DEFAULT_DATA,
    joint_tokenizer,
    machine_line,
    read_pairs,
    recipe_config,
    wu_tiny_config,
)
from torch import Tensor

from transduce.data.batching import Batch, collate, make_batches
from transduce.data.text import filter_pairs
from transduce.data.tokenizer import PAD
from transduce.models.transformer import TransformerConfig, TransformerSeq2Seq, build
from transduce.train.loss import projected_label_smoothed_nll
from transduce.train.runtime import tune_malloc

CONFIGS = {"recipe": recipe_config, "wu-tiny": wu_tiny_config}
LABEL_SMOOTHING = 0.1
LR = 5e-3  # the recipe's peak learning rate; the schedule does not change the speed
# fairseq, tiny configuration, fp32, 2 threads: a reported figure, not measured here.
FAIRSEQ_TOK_S = 4900
Loss = Callable[[TransformerSeq2Seq, Batch, AbstractContextManager], Tensor]


def train_flops(cfg: TransformerConfig, vocab: int, batch: Batch) -> tuple[float, float]:
    """Model FLOPs of one training step on ``batch``, as (dense, attention).

    6 FLOPs per multiply-add (2 forward, 4 backward), over real tokens only (padding is not
    counted, nor the logits the fused backward recomputes: model FLOPs, not hardware FLOPs).
    D model size, F ffn size, V vocabulary, Le/Ld encoder/decoder layers; multiply-adds
      per source token   Le (4 D^2 + 2 D F) + Ld 2 D^2     encoder; decoder cross-attention K/V
      per target token   Ld (6 D^2 + 2 D F) + D V          decoder layers; output projection
      per sentence       Le 2 s^2 D + Ld (t (t + 1) + 2 t s) D
    The last line is attention scores and weighted sums (s, t: source and target lengths with
    EOS; causal self-attention counts its t (t + 1) / 2 visible pairs). The first two are
    "6 x parameters touched per token", the output projection included.
    """
    d, f, le, ld = cfg.dim, cfg.ffn_dim, cfg.encoder_layers, cfg.decoder_layers
    s, t = batch.src_lens.double(), batch.tgt_lens.double()
    dense = s.sum() * (le * (4 * d * d + 2 * d * f) + ld * 2 * d * d)
    dense += t.sum() * (ld * (6 * d * d + 2 * d * f) + d * vocab)
    attention = (le * 2 * s * s * d + ld * (t * (t + 1) + 2 * t * s) * d).sum()
    return 6 * float(dense), 6 * float(attention)


def matmul_peak(dtype: torch.dtype, size: int, budget_s: float) -> tuple[float, int]:
    """FLOP/s of an n x n matmul (2 n^3 FLOPs), best of up to 3 runs, and the n used: sizes
    double from 256 up to ``size`` while 8x the last time (n^3) is predicted to fit ``budget_s``
    (a rough cap: large bf16 matmuls can be slower per FLOP than small ones)."""

    def seconds(n: int) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        started = time.perf_counter()
        a @ b
        return time.perf_counter() - started

    n = 256
    seconds(n)  # first call: kernel selection and page faults
    last = seconds(n)
    while n < size and last * 8 <= budget_s:
        n *= 2
        last = seconds(n)
    best, spent = last, last
    for _ in range(2):
        if spent + best > budget_s / 2:
            break
        t = seconds(n)
        best, spent = min(best, t), spent + t
    return 2 * n**3 / best, n


def fused_loss(model: TransformerSeq2Seq, batch: Batch, autocast: AbstractContextManager) -> Tensor:
    """What the trainer does: decoder features, then the chunked projection + loss."""
    with autocast:
        hidden = model.features(batch.src, batch.src_lens, batch.tgt_in)  # (B, T, D)
    loss, _ = projected_label_smoothed_nll(
        hidden, model.output_weight, batch.tgt_out, epsilon=LABEL_SMOOTHING, ignore_index=PAD)
    return loss


def naive_loss(model: TransformerSeq2Seq, batch: Batch, autocast: AbstractContextManager) -> Tensor:
    """Plain autograd: full (B, T, V) logits, then PyTorch's label-smoothed cross-entropy."""
    with autocast:
        logits = model(batch.src, batch.src_lens, batch.tgt_in)  # (B, T, V)
    return F.cross_entropy(
        logits.float().flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD,
        label_smoothing=LABEL_SMOOTHING, reduction="sum")


LOSSES: dict[str, Loss] = {"naive": naive_loss, "fused": fused_loss}


@dataclass
class Row:
    """One measured way of training; ``flops`` are model FLOPs of the timed updates."""

    config: str
    precision: str
    loss: str
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    note: str = ""

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.steps else math.nan

    @property
    def flop_s(self) -> float:
        return self.flops / self.seconds if self.steps else math.nan


def measure(row: Row, batches: list[Batch], vocab: int, *, warmup: int, steps: int,
            max_seconds: float, seed: int) -> Row:
    """Fresh model (same seed for every row), ``warmup`` untimed then up to ``steps`` timed
    Adam updates; stops after the update that takes the row past ``max_seconds`` overall."""
    torch.manual_seed(seed)
    cfg = CONFIGS[row.config]()
    model = build(cfg, vocab, vocab, PAD).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.98), eps=1e-8)
    bf16 = row.precision == "bf16"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    loss_fn = LOSSES[row.loss]
    batches = batches[: warmup + steps]
    flops = [sum(train_flops(cfg, vocab, b)) for b in batches]
    tokens = [b.num_tokens for b in batches]
    started = begun = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == warmup:
            started = time.perf_counter()
        loss = loss_fn(model, batch, autocast)
        (loss / tokens[i]).backward()
        loss.item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        now = time.perf_counter()
        if i >= warmup:
            row.steps, row.seconds = row.steps + 1, now - started
            row.tokens, row.flops = row.tokens + tokens[i], row.flops + flops[i]
        if now - begun > max_seconds:
            if not row.steps:
                row.note = f"stopped: {now - begun:.0f} s of warm-up passed the cap"
            elif row.steps < steps:
                row.note = f"stopped after {row.steps} of {steps} updates (time cap)"
            break
    return row


def load_batches(args: argparse.Namespace, count: int) -> tuple[list[Batch], int, int]:
    """The first ``count`` token-budget batches of epoch 0 (shuffled: a mix of lengths),
    filtered as the recipe does; also the vocabulary size and the number of pairs."""
    en, de = read_pairs(Path(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        tok = joint_tokenizer(en, de, args.spm, Path(tmp))
    src, tgt = tok.encode(en), tok.encode(de)
    keep, _ = filter_pairs(src, tgt, max_len=200, max_ratio=3.0)
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    order = make_batches([len(s) for s in src], [len(t) for t in tgt],
                         max_tokens=args.max_tokens, seed=args.seed, epoch=0)
    if len(order) < count:
        raise SystemExit(f"only {len(order)} batches in the data; lower --steps/--warmup")
    return [collate(ids, src, tgt) for ids in order[:count]], len(tok), len(keep)


def measure_peaks(args: argparse.Namespace) -> dict[str, float]:
    peaks, sizes = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[name], sizes[name] = matmul_peak(dtype, args.peak_size, args.bf16_max_seconds)
    ratio = peaks["bf16"] / peaks["fp32"]
    warning = "  <- no fast bf16 matmul on this CPU: expect slow bf16 rows" if ratio < 1 else ""
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s ({sizes['fp32']}^2), "
          f"bf16 {peaks['bf16'] / 1e9:.2f} GFLOP/s ({sizes['bf16']}^2); "
          f"bf16/fp32 = {ratio:.4f}{warning}")
    return peaks


def print_flops(names: list[str], timed: list[Batch], vocab: int) -> None:
    mega_tokens = sum(b.num_tokens for b in timed) * 1e6  # so FLOPs / mega_tokens is M per token
    for name in names:
        cfg = CONFIGS[name]()
        flops = [train_flops(cfg, vocab, b) for b in timed]
        dense, attention = sum(f[0] for f in flops), sum(f[1] for f in flops)
        print(f"training FLOPs per target token ({name}): {(dense + attention) / mega_tokens:.1f} M"
              f" = dense {dense / mega_tokens:.1f} M (output projection "
              f"{6 * cfg.dim * vocab / 1e6:.1f} M) + attention {attention / mega_tokens:.2f} M")


def run_rows(args: argparse.Namespace, batches: list[Batch], vocab: int) -> list[Row]:
    """naive fp32, fused fp32 and (capped) fused bf16 for each configuration."""
    rows = []
    fp32 = dict(warmup=args.warmup, steps=args.steps, max_seconds=math.inf, seed=args.seed)
    # Untimed update first, so that no row pays for the process's heap growth alone.
    measure(Row(args.configs[0], "fp32", "naive"), batches, vocab, warmup=1, steps=0,
            max_seconds=math.inf, seed=args.seed)
    for name in args.configs:
        rows.append(measure(Row(name, "fp32", "naive"), batches, vocab, **fp32))
        rows.append(measure(Row(name, "fp32", "fused"), batches, vocab, **fp32))
        row = Row(name, "bf16", "fused", note="skipped (--bf16-steps 0)")
        if args.bf16_steps > 0:
            row.note = ""
            measure(row, batches, vocab, warmup=min(args.warmup, 1), steps=args.bf16_steps,
                    max_seconds=args.bf16_max_seconds, seed=args.seed)
        rows.append(row)
    return rows


def print_table(rows: list[Row], peaks: dict[str, float]) -> None:
    naive = {r.config: r.tok_s for r in rows if r.loss == "naive"}
    print(f"\n{'config':8} {'prec':5} {'loss':6} {'steps':>5} {'tgt tok/s':>10} {'vs naive':>9} "
          f"{'GFLOP/s':>8} {'MFU fp32pk':>10} {'MFU bf16pk':>10}")
    for r in rows:
        if not r.steps:
            print(f"{r.config:8} {r.precision:5} {r.loss:6} {'-':>5}  {r.note}")
            continue
        bf16 = f"{'-':>10}"
        if r.precision == "bf16":
            mfu = r.flop_s / peaks["bf16"]
            bf16 = f"{mfu:10.1%}" if mfu <= 1 else f"{'n/m':>10}"
        print(f"{r.config:8} {r.precision:5} {r.loss:6} {r.steps:5d} {r.tok_s:10.0f} "
              f"{r.tok_s / naive.get(r.config, math.nan):8.2f}x {r.flop_s / 1e9:8.1f} "
              f"{r.flop_s / peaks['fp32']:10.1%} {bf16}  {r.note}")
    if any(r.precision == "bf16" and r.steps for r in rows):
        print("(bf16 rows run the model body in bf16 and the fused loss in fp32, so neither peak "
              "is their exact ceiling; n/m = not meaningful: above the bf16 peak, because this "
              "CPU's small bf16 matmuls run faster per FLOP than the large one timed)")


def find(rows: list[Row], config: str, precision: str, loss: str) -> Row | None:
    return next((r for r in rows if (r.config, r.precision, r.loss) == (config, precision, loss)
                 and r.steps), None)


def print_summary(rows: list[Row], peaks: dict[str, float], threads: int) -> None:
    tiny = find(rows, "wu-tiny", "fp32", "fused")
    if tiny is not None:
        print(f"\nfairseq, tiny configuration, fp32, 2 threads: {FAIRSEQ_TOK_S:,} target tokens/s, "
              f"REPORTED ON A DIFFERENT MACHINE, not measured here; wu-tiny fused fp32 here "
              f"({threads} threads) is {tiny.tok_s / FAIRSEQ_TOK_S:.2f}x that figure")
    name = rows[0].config
    fused, naive = find(rows, name, "fp32", "fused"), find(rows, name, "fp32", "naive")
    bf16 = find(rows, name, "bf16", "fused")
    assert fused is not None and naive is not None
    bf16_text = f"bf16 autocast {bf16.tok_s / fused.tok_s:.3f}x fp32" if bf16 else "bf16 not run"
    print(f"summary: {name} fused fp32 {fused.tok_s:.0f} target tok/s = "
          f"{fused.tok_s / naive.tok_s:.2f}x naive autograd, MFU "
          f"{fused.flop_s / peaks['fp32']:.1%} of the measured fp32 matmul peak; {bf16_text} "
          f"(bf16/fp32 matmul peak {peaks['bf16'] / peaks['fp32']:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with train.{en,de}[.gz]")
    parser.add_argument("--spm", help="joint SentencePiece model to use instead of training one")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=20, help="timed fp32 updates per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates before each row")
    parser.add_argument("--bf16-steps", type=int, default=2, help="timed bf16 updates; 0: no bf16")
    parser.add_argument("--bf16-max-seconds", type=float, default=60.0,
                        help="rough cap on each bf16 measurement (matmul peak; each row)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peaks")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    torch.set_num_threads(args.threads)
    tune_malloc()  # as the trainer does
    print(machine_line(args.threads))
    count = max(args.warmup + args.steps, min(args.warmup, 1) + args.bf16_steps)
    batches, vocab, pairs = load_batches(args, count)
    timed = batches[args.warmup : args.warmup + args.steps]
    print(f"data: {pairs} training pairs, joint BPE {vocab}, batches of <= {args.max_tokens} "
          f"padded tokens ({sum(b.num_tokens for b in timed) / len(timed):.0f} target tokens on "
          f"average); {args.warmup} warm-up + {args.steps} timed Adam updates per fp32 row")
    peaks = measure_peaks(args)
    print_flops(args.configs, timed, vocab)
    rows = run_rows(args, batches, vocab)
    print_table(rows, peaks)
    print_summary(rows, peaks, args.threads)


if __name__ == "__main__":
    main()
