"""Concurrent streams of the bundled streaming model: one-by-one sessions vs one ``StreamBatch``.

Run:
    nice -n 10 .venv/bin/python benchmarks/stream_batch.py --streams 1 4 16

N streams (the example digit recordings, three per stream, cycled so the streams differ) are fed as live
audio, --chunk-ms of PCM per stream per tick. One-by-one: every stream is its own ``StreamSession`` and
``accept`` runs one encoder call per chunk per stream. Batched: the same sessions in one ``StreamBatch``,
whose ``step`` advances every ready stream in one encoder call per round. The CTC prefix search (and
rescoring with --mode rescore) runs per stream in both. Printed side by side from the same run: audio
seconds processed per wall second for each way and their ratio, and a check that both gave the same text.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import machine_line
from torch import Tensor

from transduce.data.audio import load_audio
from transduce.recognize import Recognizer
from transduce.streaming.batch import StreamBatch
from transduce.streaming.session import StreamSession

REPO = Path(__file__).resolve().parents[1]


def one_by_one(sessions: list[StreamSession], packets: list[list[Tensor]]) -> list[str]:
    """Every stream alone: for each tick, each stream accepts its packet; then each finalizes."""
    texts = [""] * len(sessions)
    for tick in range(max(map(len, packets))):
        for i, session in enumerate(sessions):
            if tick < len(packets[i]):
                texts[i] += " ".join(s.text for s in session.accept(packets[i][tick]))
    for i, session in enumerate(sessions):
        texts[i] += " ".join(s.text for s in session.finalize())
    return texts


def batched(sessions: list[StreamSession], packets: list[list[Tensor]], chunk: int, left: int) -> list[str]:
    """All streams in one batch: for each tick, feed every stream its packet and run rounds until none is ready."""
    batch = StreamBatch(chunk_size=chunk, left_chunks=left)
    keys = [batch.add(s) for s in sessions]
    texts = {key: "" for key in keys}
    for tick in range(max(map(len, packets)) + 1):
        for key, stream in zip(keys, packets, strict=True):
            if tick < len(stream):
                batch.feed(key, stream[tick])
            elif not batch.sessions[key].closing:
                batch.finish(key)
        while updates := batch.step():
            for update in updates:
                texts[update.key] += " ".join(s.text for s in update.segments)
    while updates := batch.step():
        for update in updates:
            texts[update.key] += " ".join(s.text for s in update.segments)
    return [texts[key] for key in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "digits-hybrid-streaming"))
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--chunk-ms", type=float, default=320.0)
    parser.add_argument("--mode", default="ctc", choices=["ctc", "rescore"])
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rec = Recognizer.load(args.model, device=args.device)
    waves = [load_audio(p, rec.sample_rate) for p in sorted((REPO / "examples" / "digits").glob("*.wav"))]
    step = round(args.chunk_ms / 1000 * rec.sample_rate)
    chunk = rec.chunk_frames(args.chunk_ms)
    print(machine_line(args.threads))
    print(f"{args.model}: chunk {args.chunk_ms:.0f} ms ({chunk} frames), mode {args.mode}, beam {args.beam}, "
          f"{args.threads} thread(s), {args.device}")
    print(f"{'streams':>8}{'audio s':>9}{'one-by-one audio s/s':>22}{'batched audio s/s':>19}{'ratio':>7}{'same':>6}")

    def make() -> StreamSession:
        return rec.stream(args.chunk_ms, mode=args.mode, beam=args.beam)

    one_by_one([make()], [list(waves[0].split(step))])  # warm-up
    for n in args.streams:
        streams = [torch.cat([waves[(i + k) % len(waves)] for k in range(3)]) for i in range(n)]
        packets = [list(w.split(step)) for w in streams]
        audio = sum(w.numel() for w in streams) / rec.sample_rate
        started = time.perf_counter()
        alone = one_by_one([make() for _ in streams], packets)
        alone_rate = audio / (time.perf_counter() - started)
        started = time.perf_counter()
        together = batched([make() for _ in streams], packets, chunk, -1)
        batch_rate = audio / (time.perf_counter() - started)
        print(f"{n:>8}{audio:>9.1f}{alone_rate:>22.1f}{batch_rate:>19.1f}{batch_rate / alone_rate:>7.2f}"
              f"{'yes' if alone == together else 'NO':>6}")


if __name__ == "__main__":
    main()
