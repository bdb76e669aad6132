"""Speech subcommands: transcribe files or a manifest, evaluate WER/CER on a manifest."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transduce.data.audio import audio_duration


def speech_overrides(args: argparse.Namespace) -> dict[str, object]:
    names = {"beam": "beam", "token_prune": "token_prune", "batch_size": "batch_size"}
    return {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg, None) is not None}


def transcribe(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    from transduce.data.manifest import read_manifest
    from transduce.recognize import Recognizer

    if bool(args.files) == bool(args.manifest):
        raise usage_error("give audio files or --manifest (one of the two)")
    recognizer = Recognizer.load(args.model)
    overrides = speech_overrides(args)
    if args.manifest:
        utts = read_manifest(args.manifest)
        for utt, text in zip(utts, recognizer.transcribe([u.audio for u in utts], **overrides), strict=True):
            print(json.dumps({"id": utt.id, "text": text}, ensure_ascii=False))
        return 0
    nbest = max(args.nbest, 1)
    if nbest > 1:
        overrides["beam"] = max(nbest, int(overrides.get("beam", recognizer.config.decode.beam)))  # type: ignore[call-overload]
        overrides["nbest"] = nbest
    results = recognizer.search(args.files, **overrides)
    for path, row in zip(args.files, results, strict=True):
        for hyp in row:
            fields = [path] + ([f"{hyp.score:.4f}"] if nbest > 1 else []) + [hyp.text]
            if args.timestamps:
                fields.append(json.dumps([[p, t] for p, t in zip(hyp.tokens, hyp.times, strict=True)],
                                         ensure_ascii=False))
            print("\t".join(fields))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """WER/CER, real-time factor and throughput of a speech model on a manifest, as JSON."""
    from transduce.data.manifest import read_manifest
    from transduce.metrics.wer import alignment_report, cer, error_counts, wer
    from transduce.recognize import Recognizer

    utts = read_manifest(args.manifest)
    recognizer = Recognizer.load(args.model)
    overrides = speech_overrides(args)
    audio_seconds = sum(audio_duration(u.audio) for u in utts)
    started = time.perf_counter()
    hyps = recognizer.transcribe([u.audio for u in utts], **overrides)
    seconds = time.perf_counter() - started
    refs = [u.text for u in utts]
    if args.report:
        Path(args.report).write_text(alignment_report([u.id for u in utts], hyps, refs))
    decode = {**vars(recognizer.config.decode), **overrides}
    result = {
        "wer": round(wer(hyps, refs), 2), "cer": round(cer(hyps, refs), 2), **error_counts(hyps, refs),
        "utterances": len(utts), "audio_seconds": round(audio_seconds, 1), "seconds": round(seconds, 2),
        "rtf": round(seconds / audio_seconds, 4), "utterances_per_second": round(len(utts) / seconds, 1),
        "beam": decode["beam"],
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
