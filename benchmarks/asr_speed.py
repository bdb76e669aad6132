"""Speech speed on CPU: training throughput (fp32 vs bf16), decoding real-time factor, filterbank speed.

Training in audio seconds per second with and without bf16 autocast, decoding real-time factor by
stage, and our filterbank against lhotse's torch implementation.

Run (trained digits model):
    nice -n 10 .venv/bin/python benchmarks/asr_speed.py --model work/runs/digits/model \\
        --manifest work/data/digits/dev.jsonl
Quick check:
    nice -n 10 .venv/bin/python benchmarks/asr_speed.py --model DIR --steps 2 --limit 20

(a) Training: the --recipe's model (random init, train mode, its optimizer and clip norm) on real
batches of the manifest made as the trainer makes them (length-bucketed, at most --max-frames
padded frames each; default: the recipe's train.max_tokens), without augmentation. Batches are
collated before the clock starts (the trainer collates in loader workers); one warm-up step,
then --steps timed steps of forward + CTC loss + backward + clip + optimizer step, fp32 first
(the baseline row), then the same batches under bf16 autocast with a fresh model of the same
seed. Throughput = audio seconds in the batches per wall second.
(b) Decoding the --model on the first --limit utterances with --threads threads (default 1):
the whole of ``Recognizer.transcribe`` with greedy search from waveforms already in memory (the
baseline row), then its stages alone: features, model forward on the same length-sorted batches,
greedy search over the stored log-probs. Real-time factor = seconds / audio seconds; each (b) and
(c) row is the fastest of --repeat runs (the least disturbed on a busy machine).
(c) Features on the same waveforms: our Fbank vs lhotse's Wav2LogFilterBank configured to the
same Kaldi settings (the largest difference between the two is printed), and ``load_audio``
(soundfile + checks) at the file's rate, and with soxr HQ resampling to --resample-rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from asr_common import DEFAULT_MANIFEST, DEFAULT_MODEL, best_of, load_subset, timed
from common import REPO, machine_line
from torch import Tensor

from transduce.cli.config import load_recipe
from transduce.config import RunConfig
from transduce.data.audio import load_audio
from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.features import Fbank, FbankConfig
from transduce.data.manifest import Utterance
from transduce.data.speech_batching import SpeechBatch, SpeechCollator, make_speech_batches, utterance_frames
from transduce.data.tokenizer import train_sentencepiece
from transduce.decoding.ctc import ctc_greedy
from transduce.models.ctc import CTCModel, build_ctc
from transduce.recognize import Recognizer
from transduce.speech_config import fbank_config
from transduce.train.loss import CTCLoss

HEADER = f"{'':44} {'audio s':>8} {'wall s':>7} {'audio s/s':>10} {'RTF':>7} {'vs base':>8}"


def row(name: str, audio_s: float, seconds: float, base: float | None) -> float:
    """Print one row; ``base`` is the baseline row's audio seconds per second (None: this is it)."""
    rate = audio_s / seconds
    ratio = f"{rate / base:7.2f}x" if base else f"{'1.00x':>8}"
    print(f"{name:44} {audio_s:8.1f} {seconds:7.2f} {rate:10.1f} {seconds / audio_s:7.4f} {ratio}")
    return rate


# ---- (a) training throughput -------------------------------------------------------------
def train_batches(cfg: RunConfig, utts: list[Utterance], count: int, max_frames: int, workdir: Path
                  ) -> tuple[list[SpeechBatch], int, CMVNStats]:
    """The first ``count`` trainer-style batches, the vocabulary size, and CMVN over them."""
    tok = train_sentencepiece([u.text for u in utts], workdir / "spm.model", vocab_size=cfg.data.vocab_size,
                              model_type=cfg.data.tokenizer)
    targets = tok.encode([u.text for u in utts])
    fbank = fbank_config(cfg.data)
    order = make_speech_batches(utterance_frames(utts, fbank), max_frames=max_frames, seed=cfg.train.seed,
                                epoch=0)[:count]
    collator = SpeechCollator(utts, targets, fbank=fbank)
    batches = [collator(indices) for indices in order]
    stats = CMVNStats(cfg.data.num_mel_bins)
    for b in batches:
        for feats, n in zip(b.feats, b.feat_lens.tolist(), strict=True):
            stats.add(feats[:n])
    return batches, len(tok), stats


def train_steps(cfg: RunConfig, model: CTCModel, batches: list[SpeechBatch],
                autocast: AbstractContextManager) -> float:
    """Seconds for one training step per batch (forward, loss, backward, clip, optimizer)."""
    o = cfg.optim
    optim = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.name](
        model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    step = CTCLoss(model, autocast).train()
    started = time.perf_counter()
    for batch in batches:
        loss, _ = step(*batch.inputs())
        (loss / batch.num_tokens).backward()
        if cfg.train.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
        optim.step()
        optim.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def bench_training(args: argparse.Namespace, utts: list[Utterance]) -> str:
    cfg = load_recipe(args.recipe, [])
    max_frames = args.max_frames or cfg.train.max_tokens
    with tempfile.TemporaryDirectory() as tmp:
        batches, vocab, stats = train_batches(cfg, utts, args.steps + 1, max_frames, Path(tmp))
    shift_s = fbank_config(cfg.data).frame_shift_ms / 1000
    audio_s = shift_s * sum(int(b.feat_lens.sum()) for b in batches[1:])
    print(f"\n(a) training {args.recipe}: {len(batches) - 1} timed batches of <= {max_frames} padded frames "
          f"({audio_s / max(1, len(batches) - 1):.1f} audio s each) + 1 warm-up, {args.threads} threads")
    print(HEADER)
    rates: list[float] = []
    for name, autocast in (("fp32", nullcontext()), ("bf16 autocast", torch.autocast("cpu", dtype=torch.bfloat16))):
        torch.manual_seed(cfg.train.seed)
        model = build_ctc(cfg.model, vocab, GlobalCMVN.from_stats(stats))
        train_steps(cfg, model, batches[:1], autocast)
        seconds = train_steps(cfg, model, batches[1:], autocast)
        rates.append(row(f"train step, {name}", audio_s, seconds, rates[0] if rates else None))
    base, rate = rates
    capability = torch.backends.cpu.get_cpu_capability()
    why = "" if "512" in capability or "AMX" in capability else (
        f" (CPU capability {capability}: no AVX-512 BF16 or AMX, so bf16 kernels run slow paths and convert)")
    print(f"bf16 autocast / fp32 training throughput: {rate / base:.2f}x{why}")
    return f"training {base:.1f} audio s/s fp32, bf16 {rate / base:.2f}x"


# ---- (b) decoding ------------------------------------------------------------------------
def bench_decoding(args: argparse.Namespace, waves: list[Tensor], audio_s: float) -> str:
    rec = Recognizer.load(args.model)
    batch = args.batch_size or rec.config.decode.batch_size
    print(f"\n(b) decoding {args.model}: {len(waves)} utterances, greedy search, batches of {batch} "
          f"(sorted by length), {args.threads} threads, fastest of {args.repeat} runs per row")
    rec.transcribe(waves[:4], beam=1, lm_weight=0.0, ensemble=(), batch_size=batch)  # warm-up
    print(HEADER)
    _, whole = best_of(args.repeat, rec.transcribe, waves, beam=1, lm_weight=0.0, ensemble=(), batch_size=batch)
    base = row("transcribe (features + model + greedy)", audio_s, whole, None)
    feats, seconds = best_of(args.repeat, lambda: [rec.features(w) for w in waves])
    row("  features only", audio_s, seconds, base)
    stages = [seconds]
    order = sorted(range(len(feats)), key=lambda i: feats[i].size(0))
    chunks = [[feats[i] for i in order[s : s + batch]] for s in range(0, len(order), batch)]
    outputs, seconds = best_of(args.repeat, lambda: [rec.log_probs(c) for c in chunks])
    row("  model only (padding + forward)", audio_s, seconds, base)
    stages.append(seconds)
    _, seconds = best_of(args.repeat, lambda: [ctc_greedy(lp, lens) for lp, lens in outputs])
    row("  greedy search only", audio_s, seconds, base)
    stages.append(seconds)
    shares = ", ".join(f"{name} {100 * t / whole:.0f}%" for name, t in zip(("features", "model", "search"), stages,
                                                                          strict=True))
    print(f"share of transcribe's time: {shares}; the rest (sorting, detokenizing, overhead) "
          f"{100 * (1 - sum(stages) / whole):.0f}%")
    return f"decoding RTF {whole / audio_s:.4f} (model only {stages[1] / audio_s:.4f})"


# ---- (c) features and audio loading ------------------------------------------------------
def lhotse_fbank(cfg: FbankConfig) -> torch.nn.Module:
    from lhotse.features.kaldi.layers import Wav2LogFilterBank

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lhotse warns that snip_edges=True is unusual for it
        return Wav2LogFilterBank(
            sampling_rate=cfg.sample_rate, frame_length=cfg.frame_length_ms / 1000,
            frame_shift=cfg.frame_shift_ms / 1000, remove_dc_offset=cfg.remove_dc_offset,
            preemph_coeff=cfg.preemph, window_type=cfg.window, dither=0.0, snip_edges=True,
            low_freq=cfg.low_freq, high_freq=cfg.high_freq, num_filters=cfg.num_mel_bins)


@torch.no_grad()
def bench_features(args: argparse.Namespace, utts: list[Utterance], waves: list[Tensor], audio_s: float) -> str:
    cfg = FbankConfig(num_mel_bins=args.mel_bins)
    ours, theirs = Fbank(cfg), lhotse_fbank(cfg).eval()
    ours(waves[0]), theirs(waves[0][None])  # warm-up
    print(f"\n(c) {args.mel_bins}-bin log-mel filterbank, one utterance at a time, {args.threads} threads, "
          f"fastest of {args.repeat} runs per row")
    print(HEADER)
    ours_s, theirs_s = [], []
    for _ in range(max(1, args.repeat)):  # alternate, so that load changes hit both alike
        mine, seconds = timed(lambda: [ours(w) for w in waves])
        ours_s.append(seconds)
        ref, seconds = timed(lambda: [theirs(w[None])[0] for w in waves])
        theirs_s.append(seconds)
    base = row("transduce Fbank", audio_s, min(ours_s), None)
    lhotse_rate = row("lhotse Wav2LogFilterBank", audio_s, min(theirs_s), base)
    diff = max(float((a - b).abs().max()) for a, b in zip(mine, ref, strict=True))
    print(f"largest |ours - lhotse| over all frames and bins: {diff:.2e}")
    _, seconds = best_of(args.repeat, lambda: [load_audio(u.audio, 16000) for u in utts])
    row("load_audio, 16 kHz (= file rate)", audio_s, seconds, base)
    _, seconds = best_of(args.repeat, lambda: [load_audio(u.audio, args.resample_rate) for u in utts])
    row(f"load_audio + soxr HQ to {args.resample_rate} Hz", audio_s, seconds, base)
    return f"Fbank {base / lhotse_rate:.2f}x lhotse's speed"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="exported CTC model folder, for (b)")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="JSON-lines speech manifest")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "digits-conformer-ctc.yaml"),
                        help="recipe whose model and optimizer (a) trains")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per precision")
    parser.add_argument("--max-frames", type=int, default=4000,
                        help="padded frames per training batch (0 = the recipe's train.max_tokens)")
    parser.add_argument("--limit", type=int, default=100, help="utterances for (b) and (c) (0 = all)")
    parser.add_argument("--batch-size", type=int, default=0, help="decoding batch (0 = the model's setting)")
    parser.add_argument("--mel-bins", type=int, default=80, help="filterbank size for (c)")
    parser.add_argument("--resample-rate", type=int, default=8000, help="target rate of the resampling row")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (b) and (c) row; the fastest counts")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: train, decode, features")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    skip = set(args.skip.split(",")) - {""}
    everything = load_subset(args.manifest, 0)
    utts = everything[: args.limit] if args.limit > 0 else everything
    waves = [load_audio(u.audio, 16000) for u in utts]
    audio_s = sum(w.numel() for w in waves) / 16000
    print(f"data: {args.manifest}, {len(everything)} utterances for training batches, the first {len(utts)} "
          f"({audio_s:.1f} s of audio) for decoding and features")
    summary = []
    if "train" not in skip:
        summary.append(bench_training(args, everything))
    if "decode" not in skip:
        summary.append(bench_decoding(args, waves, audio_s))
    if "features" not in skip:
        summary.append(bench_features(args, utts, waves, audio_s))
    print(f"\nsummary: {'; '.join(summary)} ({args.threads} threads)")


if __name__ == "__main__":
    main()
