"""Hybrid CTC/attention decoding modes and streaming recognition: accuracy, speed, latency, memory.

Run (a hybrid streaming model, e.g. the digits recipe's):
    nice -n 10 .venv/bin/python benchmarks/asr_streaming.py --model models/digits-hybrid-streaming \\
        --manifest work/data/digits/dev.jsonl --limit 200 --long-minutes 60
Quick check:
    nice -n 10 .venv/bin/python benchmarks/asr_streaming.py --model DIR --limit 10 --long-minutes 1

(a) Decoding modes on the first --limit utterances, full context, --threads threads (default 1):
CTC greedy (the baseline row), CTC prefix beam, attention beam, joint CTC/attention beam and attention
rescoring of the CTC n-best, each with --beam. WER/CER, real-time factor (features + encoder + search,
waveforms already in memory) and time relative to greedy.
(b) Streaming with ``Recognizer.stream`` (chunks of --chunks ms fed as live audio, CTC prefix beam carried
across chunks, attention rescoring at the end of each utterance): WER against the same model's full-context
rescoring WER (relative degradation), real-time factor, per-chunk compute latency p50/p95 against the chunk
duration, and first-partial latency (audio received when the first token showed, minus its start time).
(c) Memory over a long input: --long-minutes of audio made by cycling the utterances with 1 s silences,
streamed in 640 ms chunks with endpointing; resident memory is printed every tenth of the way. Flat = the
stream's memory does not grow with the recording.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from asr_common import DEFAULT_MANIFEST, command_line, load_subset
from common import machine_line
from torch import Tensor

from transduce.data.audio import load_audio
from transduce.metrics.wer import cer, wer
from transduce.recognize import Recognizer
from transduce.streaming.endpoint import EndpointConfig
from transduce.streaming.stream import feed


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def decode_modes(rec: Recognizer, waves: list[Tensor], refs: list[str], beam: int, ctc_weight: float) -> None:
    audio = sum(w.numel() for w in waves) / rec.sample_rate
    modes = [("ctc greedy", {"mode": "ctc", "beam": 1}), ("ctc prefix beam", {"mode": "ctc", "beam": beam})]
    if rec.model.decoder is not None:
        modes += [("attention beam", {"mode": "attention", "beam": beam}),
                  ("joint ctc/attention", {"mode": "joint", "beam": beam, "ctc_weight": ctc_weight}),
                  ("attention rescoring", {"mode": "rescore", "beam": beam, "ctc_weight": ctc_weight})]
    print(f"\n(a) decoding modes, full context, beam {beam}, {len(waves)} utterances, {audio:.0f} s of audio")
    print(f"{'mode':<22}{'WER':>8}{'CER':>8}{'RTF':>9}{'time vs greedy':>16}")
    baseline = 0.0
    for name, overrides in modes:
        rec.transcribe(waves[:2], **overrides)  # warm-up
        started = time.perf_counter()
        hyps = rec.transcribe(waves, batch_size=16, **overrides)
        seconds = time.perf_counter() - started
        baseline = baseline or seconds
        print(f"{name:<22}{wer(hyps, refs):8.2f}{cer(hyps, refs):8.2f}{seconds / audio:9.4f}"
              f"{seconds / baseline:15.2f}x")


def stream_one(rec: Recognizer, wave: Tensor, chunk_ms: float, beam: int, ctc_weight: float):
    stream = rec.stream(chunk_ms, beam=beam, mode="rescore" if rec.model.decoder is not None else "ctc",
                        ctc_weight=ctc_weight)
    return " ".join(s.text for s in feed(stream, wave, chunk_ms)), stream.stats


def streaming(rec: Recognizer, waves: list[Tensor], refs: list[str], chunks: list[float], beam: int,
              ctc_weight: float) -> None:
    audio = sum(w.numel() for w in waves) / rec.sample_rate
    mode = "rescore" if rec.model.decoder is not None else "ctc"
    full = wer(rec.transcribe(waves, batch_size=16, mode=mode, beam=beam, ctc_weight=ctc_weight), refs)
    print(f"\n(b) streaming ({mode} at each end of utterance), full-context WER {full:.2f} (the baseline)")
    print(f"{'chunk':>7}{'WER':>8}{'rel. to full':>14}{'RTF':>9}{'p50 ms':>9}{'p95 ms':>9}{'p95/chunk':>11}"
          f"{'first partial ms':>18}")
    for chunk_ms in chunks:
        started = time.perf_counter()
        results = [stream_one(rec, w, chunk_ms, beam, ctc_weight) for w in waves]
        seconds = time.perf_counter() - started
        hyps = [text for text, _ in results]
        lat = np.array([s for _, st in results for s in st.chunk_seconds]) * 1000
        first = [st.first_partial_at - st.first_token_time for _, st in results
                 if st.first_partial_at is not None and st.first_token_time is not None]
        w = wer(hyps, refs)
        p50, p95 = np.percentile(lat, 50), np.percentile(lat, 95)
        print(f"{chunk_ms:5.0f}ms{w:8.2f}{(w - full) / max(full, 1e-9) * 100:+13.1f}%{seconds / audio:9.4f}"
              f"{p50:9.2f}{p95:9.2f}{p95 / chunk_ms:11.3f}{np.mean(first) * 1000:18.0f}")


def long_audio(waves: list[Tensor], sample_rate: int, minutes: float) -> Iterator[Tensor]:
    """Chunks of a --minutes recording cycling the utterances with 1 s silences, made on the fly."""
    total, i = int(minutes * 60 * sample_rate), 0
    silence = torch.zeros(sample_rate)
    while total > 0:
        for piece in (waves[i % len(waves)], silence):
            yield piece[:total]
            total -= piece.numel()
        i += 1


def memory(rec: Recognizer, waves: list[Tensor], minutes: float, beam: int) -> None:
    stream = rec.stream(640, endpoint=EndpointConfig(trailing_silence=0.5), beam=beam,
                        mode="rescore" if rec.model.decoder is not None else "ctc")
    step = round(0.64 * rec.sample_rate)
    fed, marks, segments = 0, [], 0
    buffer = torch.zeros(0)
    started = time.perf_counter()
    for piece in long_audio(waves, rec.sample_rate, minutes):
        buffer = torch.cat([buffer, piece])
        while buffer.numel() >= step:
            segments += len(stream.accept(buffer[:step]))
            buffer = buffer[step:]
            fed += step
            if fed >= (len(marks) + 1) * minutes * 6 * rec.sample_rate:
                marks.append((fed / rec.sample_rate / 60, rss_mb()))
    segments += len(stream.finalize())
    seconds = time.perf_counter() - started
    print(f"\n(c) {minutes:g} minutes streamed in 640 ms chunks with endpointing: {segments} segments, "
          f"RTF {seconds / (fed / rec.sample_rate):.4f}")
    print("resident memory: " + ", ".join(f"{m:.0f} min {mb:.0f} MB" for m, mb in marks))
    print(f"growth from the first mark to the last: {marks[-1][1] - marks[0][1]:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--ctc-weight", type=float, default=0.5)
    parser.add_argument("--chunks", default="640,320", help="streaming chunk sizes in ms, comma-separated")
    parser.add_argument("--long-minutes", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: modes,streaming,memory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(command_line("asr_streaming.py", [(f"--{k.replace('_', '-')}", v) for k, v in vars(args).items()]))
    print(machine_line(args.threads))
    rec = Recognizer.load(args.model)
    # modes are compared on the acoustic model alone (a model's own LM and ensemble off; LM fusion:
    # benchmarks/asr_lm.py)
    rec.config = replace(rec.config, decode=replace(rec.config.decode, lm_weight=0.0, ensemble=()))
    utts = load_subset(args.manifest, args.limit)
    waves = [load_audio(u.audio, rec.sample_rate) for u in utts]
    refs = [u.text for u in utts]
    skip = set(args.skip.split(","))
    if "modes" not in skip:
        decode_modes(rec, waves, refs, args.beam, args.ctc_weight)
    if "streaming" not in skip:
        streaming(rec, waves, refs, [float(c) for c in args.chunks.split(",")], args.beam, args.ctc_weight)
    if "memory" not in skip:
        memory(rec, waves, args.long_minutes, args.beam)


if __name__ == "__main__":
    main()
