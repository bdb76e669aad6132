"""``transduce translate`` and ``transduce transcribe`` with a unified model as ``--model`` (``Unified``): text
from arguments, --input files or stdin (one translation per line), audio or text-line image files or a --manifest
(``FILE<TAB>TEXT`` or ``{"id", "text"}`` JSON lines). ``--task`` and ``--tgt-lang`` pick the tags; what the model
does not do is a one-line error before any input is read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from transduce.errors import UsageError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""Arguments ending so are images (a missing or bad file is a one-line error naming it, not text to translate)."""
CLASHING = ("asr", "truecase", "ensemble", "rerank", "rerank_weight", "rerank_weights", "plot_attention",
            "attention_layer", "attention_head", "coverage_penalty", "quantize", "mode", "ctc_weight", "reverse_weight",
            "token_prune", "chunk_ms", "left_chunks", "lm", "lm_weight", "lexicon", "stream", "vad", "timestamps",
            "report", "ref_tok", "lang")
"""Options of other models that a unified model refuses."""


def is_unified(args: argparse.Namespace) -> bool:
    """``--model`` is a unified model folder (and there is no --asr)."""
    if getattr(args, "asr", None) or not getattr(args, "model", None):
        return False
    from transduce.tasks import open_folder
    from transduce.unified import Unified

    try:
        kind, _, _ = open_folder(args.model)
    except (FileNotFoundError, ValueError):  # not a model folder of ours: the caller says so
        return False
    return issubclass(kind.inference, Unified)


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, object]]:
    from transduce.unified import Unified

    given = [name for name in CLASHING if getattr(args, name, None) not in (None, False, [], (), ["none"])]
    if given:
        raise UsageError(f"{args.model} is a unified model; leave out --{given[0].replace('_', '-')}")
    if getattr(args, "nbest", 1) > 1:
        raise UsageError(f"{args.model}: a unified model prints one output per input; leave out --nbest")
    overrides = {name: getattr(args, name) for name in ("beam", "len_penalty", "batch_size")
                 if getattr(args, name, None) is not None}
    return Unified.load(args.model), overrides


def _is_audio(path: str) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES and Path(path).is_file()


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _speech(model: Any, args: argparse.Namespace, files: list[str], task: str, overrides: dict[str, object]) -> int:
    """Audio or image files, or the --manifest's utterances -> one output each."""
    from transduce.data.manifest import read_manifest

    modality = "image" if files and all(_is_image(f) for f in files) else "speech"
    model.prefix(task, args.tgt_lang, modality)  # what the model does not do fails before any input is read
    if bool(files) == bool(args.manifest):
        raise UsageError(f"{args.model}: give audio files or --manifest (one of the two)")
    utts = read_manifest(args.manifest, check_audio=True) if args.manifest else []
    audio = [u.audio for u in utts] if utts else files
    rows = model.search(audio, modality=modality, task=task, tgt_lang=args.tgt_lang, **overrides)
    texts = model.tokenizer.decode([row[0].tokens if row else [] for row in rows])
    for i, text in enumerate(texts):
        print(json.dumps({"id": utts[i].id, "text": text}, ensure_ascii=False) if utts else f"{files[i]}\t{text}")
    return 0


def translate(args: argparse.Namespace) -> int:
    """``transduce translate --model UNIFIED [--task translate|transcribe] [--tgt-lang L]``: audio (files or
    --manifest) or text (arguments, --input, stdin)."""
    from transduce.cli.commands import _input_lines

    model, overrides = _load(args)
    task = args.task or "translate"
    if args.manifest or (args.sentences and all(_is_audio(p) or _is_image(p) for p in args.sentences)):
        if args.input:
            raise UsageError(f"{args.model}: --input holds text; give audio or images as arguments or --manifest")
        return _speech(model, args, list(args.sentences), task, overrides)
    model.prefix(task, args.tgt_lang, "text")
    lines, _ = _input_lines(args)
    rows = model.search(lines, modality="text", task=task, tgt_lang=args.tgt_lang, **overrides)
    for text in model.tokenizer.decode([row[0].tokens if row else [] for row in rows]):
        print(text)
    return 0


def transcribe(args: argparse.Namespace) -> int:
    """``transduce transcribe --model UNIFIED``: audio or image files or --manifest -> transcripts."""
    model, overrides = _load(args)
    args.tgt_lang = None
    return _speech(model, args, list(args.files), "transcribe", overrides)


def evaluate(args: argparse.Namespace) -> int:
    """``transduce evaluate --model UNIFIED``: --manifest alone = ASR (WER, CER); --manifest with --tgt-lang =
    speech translation (the end-to-end model's report); --src/--ref [--tgt-lang] = text translation (BLEU, chrF,
    tokenized-lowercased BLEU). Each with its decode time."""
    import time

    from transduce.data.text import read_lines

    model, overrides = _load(args)
    if args.manifest and (args.src or args.ref):
        raise UsageError("--manifest (speech) and --src/--ref (text) do not go together")
    if args.manifest and args.tgt_lang:
        return _evaluate_st(model, args, overrides)
    if args.manifest:
        return _evaluate_asr(model, args, overrides)
    if not (args.src and args.ref):
        raise UsageError(f"{args.model}: text translation needs --src and --ref; speech needs --manifest")
    from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu

    lang = args.tgt_lang or model.offers.get(("text", "translate"), [""])[0]
    model.prefix("translate", lang, "text")
    src, refs = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(refs):
        raise UsageError(f"{args.src} has {len(src)} lines but {args.ref} has {len(refs)}")
    started = time.perf_counter()
    hyps = model.translate(src, lang, **overrides)
    seconds = time.perf_counter() - started
    _write(args, hyps)
    print(json.dumps({**sacre_scores(hyps, refs),
                      "bleu_tok_lc": tokenized_bleu(hyps, [mmt_tokenize(r, lang) for r in refs], lang),
                      "tgt_lang": lang, "sentences": len(src), "beam": overrides.get("beam", model.config.decode.beam),
                      "seconds": round(seconds, 2), "sentences_per_second": round(len(src) / seconds, 1)}, indent=2))
    return 0


def _write(args: argparse.Namespace, hyps: list[str]) -> None:
    if getattr(args, "output", None):
        Path(args.output).write_text("".join(f"{h}\n" for h in hyps), encoding="utf-8")


def _evaluate_st(model: Any, args: argparse.Namespace, overrides: dict[str, object]) -> int:
    """Speech translation of the manifest into --tgt-lang, reported as the end-to-end speech translation model."""
    import time

    from transduce.cli.st import _report
    from transduce.data.speech_translation import read_st_manifest

    model.prefix("translate", args.tgt_lang, "speech")
    utts = read_st_manifest(args.manifest, [args.tgt_lang], check_audio=True)
    started = time.perf_counter()
    hyps = model.translate_audio([u.utt.audio for u in utts], args.tgt_lang, **overrides)
    _report(args, hyps, utts, args.tgt_lang, time.perf_counter() - started,
            beam=overrides.get("beam", model.config.decode.beam))
    return 0


def _evaluate_asr(model: Any, args: argparse.Namespace, overrides: dict[str, object]) -> int:
    """Transcripts of the manifest: corpus WER and CER (percent) against its "text", and the real-time factor."""
    import time

    from transduce.data.manifest import read_manifest
    from transduce.metrics.wer import cer, wer

    model.prefix("transcribe", None, "speech")
    utts = read_manifest(args.manifest, check_audio=True)
    started = time.perf_counter()
    hyps = model.transcribe([u.audio for u in utts], **overrides)
    seconds = time.perf_counter() - started
    _write(args, hyps)
    refs = [u.text for u in utts]
    audio = sum(u.duration for u in utts)
    result = {"wer": round(wer(hyps, refs), 2), "cer": round(cer(hyps, refs), 2), "utterances": len(utts),
              "beam": overrides.get("beam", model.config.decode.beam), "seconds": round(seconds, 2),
              "rtf": round(seconds / audio, 4)}
    print(json.dumps(result) if getattr(args, "json", False) else json.dumps(result, indent=2))
    return 0
