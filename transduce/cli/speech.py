"""Speech subcommands: transcribe files or a manifest, evaluate WER/CER on a manifest."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from transduce.data.audio import audio_duration

if TYPE_CHECKING:
    from torch import Tensor

    from transduce.recognize import Recognizer
    from transduce.streaming.endpoint import EndpointConfig
    from transduce.streaming.stream import Segment, Stream


def speech_overrides(args: argparse.Namespace, recognizer: Recognizer) -> dict[str, object]:
    """CTCDecodeConfig overrides from the command line (``--chunk-ms`` converted to encoder frames)."""
    names = ("beam", "token_prune", "batch_size", "mode", "ctc_weight", "reverse_weight", "left_chunks", "lm",
             "lm_weight", "insertion_bonus", "lexicon", "oov_penalty")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "chunk_ms", None):
        overrides["chunk_size"] = recognizer.chunk_frames(args.chunk_ms)
    if getattr(args, "ensemble", None):  # partner models replace the config's; "none" decodes this model alone
        overrides["ensemble"] = () if args.ensemble == ["none"] else tuple(args.ensemble)
    return overrides


def _endpoint(args: argparse.Namespace, default: float) -> EndpointConfig | None:
    from transduce.streaming.endpoint import EndpointConfig

    silence = default if args.endpoint_silence is None else args.endpoint_silence
    return EndpointConfig(trailing_silence=silence) if silence > 0 else None


def stream_file(recognizer: Recognizer, wave: Tensor, chunk_ms: float, endpoint: EndpointConfig | None,
                overrides: dict[str, object], on_partial: Callable[[str], None] | None = None,
                realtime: bool = False, vad: bool = False) -> tuple[list[Segment], Stream]:
    """Feed ``wave`` to a new stream ``chunk_ms`` of audio at a time, as a live source would."""
    from transduce.streaming.stream import feed

    stream = recognizer.stream(chunk_ms, endpoint=endpoint, vad=vad and endpoint is not None, **overrides)
    return feed(stream, wave, chunk_ms, on_partial, realtime), stream


def transcribe(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    from transduce.cli import images
    from transduce.data.manifest import read_manifest
    from transduce.read_images import ImageRecognizer
    from transduce.recognize import Recognizer

    if bool(args.files) == bool(args.manifest):
        raise usage_error("give audio files or --manifest (one of the two)")
    recognizer = Recognizer.load(args.model)
    overrides = speech_overrides(args, recognizer)
    if isinstance(recognizer, ImageRecognizer):
        return images.transcribe(args, recognizer, overrides)
    if args.stream:
        return _transcribe_stream(args, recognizer, overrides, usage_error)
    if args.manifest:
        utts = read_manifest(args.manifest, check_audio=True)
        for utt, text in zip(utts, recognizer.transcribe([u.audio for u in utts], **overrides), strict=True):
            print(json.dumps({"id": utt.id, "text": text}, ensure_ascii=False))
        return 0
    long = [path for path in args.files if _is_long(path, args.segment)]
    if long and args.nbest > 1:
        raise usage_error(f"{long[0]}: --nbest needs short files; a file cut at pauses prints its best pieces "
                          "(--segment none keeps it whole)")
    short: list[str] = []
    for path in args.files + [""]:  # in input order: runs of short files batched, long files piece by piece
        if path in long or not path:
            _transcribe_short(args, recognizer, short, dict(overrides))
            short = []
        if path in long:
            _transcribe_long(args, recognizer, path, overrides)
        elif path:
            short.append(path)
    return 0


def _transcribe_short(args: argparse.Namespace, recognizer: Recognizer, files: list[str],
                      overrides: dict[str, object]) -> None:
    """Whole files recognized together: FILE[<TAB>SCORE]<TAB>TEXT[<TAB>token times as JSON] per hypothesis."""
    if not files:
        return
    nbest = max(args.nbest, 1)
    if nbest > 1:
        overrides["beam"] = max(nbest, int(overrides.get("beam", recognizer.config.decode.beam)))  # type: ignore[call-overload]
        overrides["nbest"] = nbest
    for path, row in zip(files, recognizer.search(files, **overrides), strict=True):
        for hyp in row:
            fields = [path] + ([f"{hyp.score:.4f}"] if nbest > 1 else []) + [hyp.text]
            if args.timestamps:
                fields.append(json.dumps([[p, t] for p, t in zip(hyp.tokens, hyp.times, strict=True)],
                                         ensure_ascii=False))
            print("\t".join(fields))


def _is_long(path: str, segment: str) -> bool:
    """Whether ``transcribe`` cuts this file at pauses: ``--segment vad``, or ``auto`` and a long file."""
    from transduce.long_audio import LONG_AUDIO_SECONDS

    return segment == "vad" or (segment == "auto" and audio_duration(path) > LONG_AUDIO_SECONDS)


def _transcribe_long(args: argparse.Namespace, recognizer: Recognizer, path: str,
                     overrides: dict[str, object]) -> None:
    """A file cut at pauses, read block by block: FILE<TAB>START<TAB>END<TAB>TEXT per piece as it is recognized
    [<TAB>token times in the file as JSON with --timestamps]."""
    from transduce.long_audio import transcribe_long

    for piece in transcribe_long(recognizer, path, overrides=overrides):
        fields = [path, f"{piece.start:.2f}", f"{piece.end:.2f}", piece.text]
        if args.timestamps:
            tokens = piece.transcript.tokens
            fields.append(json.dumps([[p, t] for p, t in zip(tokens, piece.transcript.times, strict=True)],
                                     ensure_ascii=False))
        print("\t".join(fields), flush=True)


def _transcribe_stream(args: argparse.Namespace, recognizer: Recognizer, overrides: dict[str, object],
                       usage_error: type[Exception]) -> int:
    """Each file as a live stream: partials on stderr as they change, final segments on stdout as
    FILE<TAB>START<TAB>END<TAB>TEXT (seconds)."""
    import sys

    from transduce.data.audio import load_audio

    if args.manifest:
        raise usage_error("--stream takes audio files, not --manifest")
    overrides.pop("chunk_size", None)
    tty = sys.stderr.isatty()

    def show(text: str) -> None:
        print(f"\r\033[K{text}" if tty else f"partial: {text}", end="" if tty else "\n", file=sys.stderr, flush=True)

    for path in args.files:
        wave = load_audio(path, recognizer.sample_rate)
        segments, _ = stream_file(recognizer, wave, args.chunk_ms or 640.0, _endpoint(args, 0.8), overrides,
                                  on_partial=show, realtime=args.realtime, vad=args.vad)
        if tty:
            print("\r\033[K", end="", file=sys.stderr)
        for seg in segments:
            print(f"{path}\t{seg.start:.2f}\t{seg.end:.2f}\t{seg.text}", flush=True)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """WER/CER, real-time factor and throughput of a speech model on a manifest, as JSON (an OCR model's: CER/WER
    and images per second on an image manifest)."""
    from transduce.cli import images
    from transduce.data.manifest import read_manifest
    from transduce.metrics.wer import alignment_report, cer, error_counts, wer
    from transduce.read_images import ImageRecognizer
    from transduce.recognize import Recognizer

    recognizer = Recognizer.load(args.model)
    overrides = speech_overrides(args, recognizer)
    if isinstance(recognizer, ImageRecognizer):
        return images.evaluate(args, recognizer, overrides)
    utts = read_manifest(args.manifest, check_audio=True)
    audio_seconds = sum(audio_duration(u.audio) for u in utts)
    started = time.perf_counter()
    if args.stream:
        hyps, streaming = _evaluate_stream(args, recognizer, overrides, [u.audio for u in utts])
    else:
        hyps, streaming = recognizer.transcribe([u.audio for u in utts], **overrides), {}
    seconds = time.perf_counter() - started
    refs = [u.text for u in utts]
    if args.report:
        Path(args.report).write_text(alignment_report([u.id for u in utts], hyps, refs))
    decode = {**vars(recognizer.config.decode), **overrides}
    result = {
        "wer": round(wer(hyps, refs), 2), "cer": round(cer(hyps, refs), 2), **error_counts(hyps, refs),
        "utterances": len(utts), "audio_seconds": round(audio_seconds, 1), "seconds": round(seconds, 2),
        "rtf": round(seconds / audio_seconds, 4), "utterances_per_second": round(len(utts) / seconds, 1),
        "beam": decode["beam"], "mode": decode["mode"], **streaming,
    }
    if decode["lm"] and decode["lm_weight"]:
        result.update({k: decode[k] for k in ("lm", "lm_weight", "insertion_bonus", "lexicon", "oov_penalty")})
    if decode["ensemble"]:
        result.update(ensemble=list(decode["ensemble"]), ensemble_nbest=decode["ensemble_nbest"])
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _evaluate_stream(args: argparse.Namespace, recognizer: Recognizer, overrides: dict[str, object],
                     audio: list) -> tuple[list[str], dict[str, object]]:
    """Stream every utterance; returns the texts and the latency figures: per-chunk compute p50/p95 and
    first-partial latency (audio received when the first token showed, minus that token's start time)."""
    import numpy as np

    from transduce.data.audio import load_audio

    overrides.pop("chunk_size", None)
    chunk_ms = args.chunk_ms or 640.0
    texts, chunk_seconds, first = [], [], []
    for path in audio:
        segments, stream = stream_file(recognizer, load_audio(path, recognizer.sample_rate), chunk_ms,
                                       _endpoint(args, 0.0), overrides, vad=args.vad)
        texts.append(" ".join(seg.text for seg in segments))
        chunk_seconds += stream.stats.chunk_seconds
        if stream.stats.first_partial_at is not None and stream.stats.first_token_time is not None:
            first.append(stream.stats.first_partial_at - stream.stats.first_token_time)
    ms = np.array(chunk_seconds) * 1000
    return texts, {
        "streaming": True, "chunk_ms": chunk_ms, "chunk_frames": recognizer.chunk_frames(chunk_ms),
        "chunk_latency_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "chunk_latency_p95_ms": round(float(np.percentile(ms, 95)), 2),
        "first_partial_latency_ms": round(float(np.mean(first)) * 1000, 1) if first else None,
    }


def train_lm(args: argparse.Namespace) -> int:
    """Train a Kneser-Ney n-gram LM over a speech model's pieces and write it as ARPA, with a summary line."""
    from transduce.data.captions import normalize_text
    from transduce.data.manifest import read_manifest
    from transduce.data.text import read_lines
    from transduce.decoding.lm_fusion import piece_sentences, train_piece_lm
    from transduce.recognize import load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(args.model)
    lines = [line for path in args.text for line in read_lines(path)]
    if args.normalize == "words":
        lines = [normalize_text(line) for line in lines]
    excluded = {u.text for path in args.exclude for u in read_manifest(path)}
    kept = [line for line in lines if line.strip() and line not in excluded]
    model = train_piece_lm(tokenizer, kept, args.order)
    model.save_arpa(args.out)
    if args.lexicon:
        words = sorted({word for line in kept for word in line.split()})
        Path(args.lexicon).write_text("".join(f"{word}\n" for word in words))
    counts = [sum(len(g) == n for g in model.entries) for n in range(1, model.order + 1)]
    summary = (f"{args.out}: order {model.order}, {len(kept)} sentences ({len(lines) - len(kept)} empty or "
               f"excluded), n-grams {'/'.join(map(str, counts))}")
    if args.dev:
        dev = [u.text for u in read_manifest(args.dev)]
        summary += f", dev perplexity {model.perplexity(piece_sentences(tokenizer, dev)):.3f} per piece"
        if args.lexicon:
            known = set(Path(args.lexicon).read_text().split())
            words = [w for text in dev for w in text.split()]
            summary += f", dev words not in the lexicon {100 * sum(w not in known for w in words) / len(words):.2f}%"
    print(f"{summary}, {time.perf_counter() - started:.1f} s")
    return 0
