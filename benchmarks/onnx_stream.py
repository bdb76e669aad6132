"""Streaming speech through PyTorch vs ONNX Runtime float32 vs ONNX Runtime int8, side by side in one run.

Run (the bundled streaming model on the digits dev set of the held-out FSDD speaker nicolas, 1 thread):
    nice -n 10 .venv/bin/python benchmarks/onnx_stream.py --limit 200
Quick check:
    nice -n 10 .venv/bin/python benchmarks/onnx_stream.py --limit 20

Every utterance is streamed (``Recognizer.stream`` + ``streaming.stream.feed``: --chunk-ms of audio at a time,
as a live source, CTC prefix beam --beam carried across chunks) through each system in turn, so load from other
processes hits all of them alike; the time of each system is summed over the utterances. Systems: the PyTorch
model folder searching with CTC only (the same search as the ONNX exports: the baseline row), the PyTorch model
rescoring at the end of each utterance with its attention decoders (its default; not exported), and the two ONNX
exports (``transduce export --format onnx [--quantize int8]``, made into --exports on first use). Printed: WER,
real-time factor (compute seconds / audio seconds, features included), RTF relative to the baseline, WER
difference to the baseline, and whether the issue's targets hold (int8 RTF <= half the PyTorch one, WER within
0.2 points).

The dev set is made with the recipe's own settings (``transduce data digits --from ../shared/data/fsdd``: seed 1,
speaker nicolas held out) into --data when it is missing there.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from asr_common import command_line
from common import REPO, machine_line

from transduce.data.audio import load_audio
from transduce.data.digits import prepare_digits
from transduce.data.manifest import read_manifest
from transduce.export import export_model
from transduce.metrics.wer import wer
from transduce.recognize import Recognizer
from transduce.streaming.stream import feed

T = TypeVar("T")


def dev_set(data: Path, fsdd: Path, limit: int) -> tuple[list[torch.Tensor], list[str]]:
    """The first ``limit`` dev utterances (waveforms, references), made with the recipe's settings if missing."""
    if not (data / "dev.jsonl").is_file():
        print(f"making the digits dev set in {data} from {fsdd}", file=sys.stderr)
        prepare_digits(data, source=fsdd, utterances={"train": 1, "dev": 600, "test": 0},
                       log=lambda line: print(line, file=sys.stderr))
    utts = read_manifest(data / "dev.jsonl")[: limit or None]
    return [load_audio(u.audio, 16000) for u in utts], [u.text for u in utts]


def exported(model: Path, exports: Path, quantize: str | None) -> Path:
    """The ONNX export of ``model`` in ``exports`` (made when missing, timed)."""
    out = exports / f"{model.name}-onnx{'-' + quantize if quantize else ''}"
    if not (out / "export.yaml").is_file():
        started = time.perf_counter()
        export_model(model, "onnx", out, quantize=quantize)
        print(f"exported {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


class EncoderClock:
    """Seconds spent in a model's encoder and CTC head (``forward_chunks`` + ``ctc_log_probs``), wrapped around the
    model's own methods, so the rest of the stream (features, search, endpointing) is the difference."""

    def __init__(self, model: object) -> None:
        self.seconds = 0.0
        for name in ("forward_chunks", "ctc_log_probs"):
            setattr(model, name, self._timed(getattr(model, name)))

    def _timed(self, method: Callable[..., T]) -> Callable[..., T]:
        def run(*args: object, **kwargs: object) -> T:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return run


def stream_text(recognizer: Recognizer, wave: torch.Tensor, chunk_ms: float, overrides: dict[str, object]) -> str:
    stream = recognizer.stream(chunk_ms, **overrides)
    return " ".join(segment.text for segment in feed(stream, wave, chunk_ms))


def side_by_side(systems: list[tuple[str, Recognizer, dict[str, object]]], waves: list[torch.Tensor],
                 chunk_ms: float) -> tuple[list[list[str]], list[float], list[float]]:
    """Each utterance through every system in turn -> texts, total seconds and encoder seconds per system."""
    clocks = {id(r): EncoderClock(r.model) for _, r, _ in systems}
    for _, recognizer, overrides in systems:  # warm-up
        stream_text(recognizer, waves[0], chunk_ms, overrides)
    texts: list[list[str]] = [[] for _ in systems]
    seconds, encoder = [0.0] * len(systems), [0.0] * len(systems)
    for wave in waves:
        for i, (_, recognizer, overrides) in enumerate(systems):
            clock = clocks[id(recognizer)]
            before, started = clock.seconds, time.perf_counter()
            texts[i].append(stream_text(recognizer, wave, chunk_ms, overrides))
            seconds[i] += time.perf_counter() - started
            encoder[i] += clock.seconds - before
    return texts, seconds, encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "digits-hybrid-streaming")
    parser.add_argument("--data", type=Path, default=REPO / "work" / "data" / "digits-dev",
                        help="digits dev set (made here when missing: the recipe's dev split only)")
    parser.add_argument("--fsdd", type=Path, default=REPO.parent / "shared" / "data" / "fsdd")
    parser.add_argument("--exports", type=Path, default=REPO / "work" / "exports")
    parser.add_argument("--limit", type=int, default=200, help="dev utterances (0 = all 600)")
    parser.add_argument("--chunk-ms", type=float, default=640.0)
    parser.add_argument("--beams", default="8,1", help="CTC prefix beam widths, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the ONNX sessions take torch's thread count
    waves, refs = dev_set(args.data, args.fsdd, args.limit)
    audio = sum(w.numel() for w in waves) / 16000
    pytorch = Recognizer.load(args.model)
    fp32 = Recognizer.load(exported(args.model, args.exports, None))
    int8 = Recognizer.load(exported(args.model, args.exports, "int8"))
    beams = [int(b) for b in args.beams.split(",")]
    systems = [("pytorch rescore", pytorch, {"mode": "rescore", "beam": beams[0]})]
    for beam in beams:
        systems += [(f"pytorch ctc b{beam}", pytorch, {"mode": "ctc", "beam": beam}),
                    (f"onnx fp32 ctc b{beam}", fp32, {"beam": beam}), (f"onnx int8 ctc b{beam}", int8, {"beam": beam})]
    texts, seconds, encoder = side_by_side(systems, waves, args.chunk_ms)
    print(command_line("onnx_stream.py", [("--limit", args.limit), ("--chunk-ms", args.chunk_ms),
                                          ("--beams", args.beams), ("--threads", args.threads)]))
    print(machine_line(args.threads))
    print(f"{args.model.name}: {len(waves)} dev utterances ({audio:.0f} s, held-out speaker), streamed in "
          f"{args.chunk_ms:.0f} ms chunks; RTF = compute / audio seconds, encoder = encoder + CTC head only")
    print(f"{'system':<20}{'WER':>7}{'vs pt':>7}{'RTF':>8}{'vs pt':>7}{'encoder RTF':>13}{'vs pt':>7}")
    verdicts = []
    for i, (name, _, _) in enumerate(systems):
        base = 1 if i == 0 else 1 + 3 * ((i - 1) // 3)  # the PyTorch CTC row of the same beam
        w, rtf, enc = wer(texts[i], refs), seconds[i] / audio, encoder[i] / audio
        base_wer, base_rtf, base_enc = wer(texts[base], refs), seconds[base] / audio, encoder[base] / audio
        print(f"{name:<20}{w:7.2f}{w - base_wer:+7.2f}{rtf:8.4f}{rtf / base_rtf:6.2f}x"
              f"{enc:13.4f}{enc / base_enc:6.2f}x")
        if name.startswith("onnx int8"):
            verdicts.append(f"{name}: RTF {rtf / base_rtf:.2f}x ({'met' if rtf <= 0.5 * base_rtf else 'NOT met'}), "
                            f"encoder {enc / base_enc:.2f}x, WER {w - base_wer:+.2f} "
                            f"({'met' if abs(w - base_wer) <= 0.2 else 'NOT met'})")
    print("targets (int8 RTF <= 0.5x PyTorch, WER within 0.2): " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
