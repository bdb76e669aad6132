"""``transduce translate`` and ``transduce transcribe`` with a unified model as ``--model`` (``Unified``): text
from arguments, --input files or stdin (one translation per line), audio files or a --manifest (``FILE<TAB>TEXT``
or ``{"id", "text"}`` JSON lines). ``--task`` and ``--tgt-lang`` pick the tags; what the model does not do is a
one-line error before any input is read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from transduce.errors import UsageError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
CLASHING = ("asr", "truecase", "ensemble", "rerank", "rerank_weight", "rerank_weights", "plot_attention",
            "attention_layer", "attention_head", "coverage_penalty", "quantize", "mode", "ctc_weight", "reverse_weight",
            "token_prune", "chunk_ms", "left_chunks", "lm", "lm_weight", "lexicon", "stream", "vad", "timestamps")
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


def _speech(model: Any, args: argparse.Namespace, files: list[str], task: str, overrides: dict[str, object]) -> int:
    """Audio files or the --manifest's utterances -> one output each."""
    from transduce.data.manifest import read_manifest

    model.prefix(task, args.tgt_lang, "speech")  # what the model does not do fails before any audio is read
    if bool(files) == bool(args.manifest):
        raise UsageError(f"{args.model}: give audio files or --manifest (one of the two)")
    utts = read_manifest(args.manifest, check_audio=True) if args.manifest else []
    audio = [u.audio for u in utts] if utts else files
    rows = model.search(audio, modality="speech", task=task, tgt_lang=args.tgt_lang, **overrides)
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
    if args.manifest or (args.sentences and all(_is_audio(p) for p in args.sentences)):
        if args.input:
            raise UsageError(f"{args.model}: --input holds text; give audio as arguments or --manifest")
        return _speech(model, args, list(args.sentences), task, overrides)
    model.prefix(task, args.tgt_lang, "text")
    lines, _ = _input_lines(args)
    rows = model.search(lines, modality="text", task=task, tgt_lang=args.tgt_lang, **overrides)
    for text in model.tokenizer.decode([row[0].tokens if row else [] for row in rows]):
        print(text)
    return 0


def transcribe(args: argparse.Namespace) -> int:
    """``transduce transcribe --model UNIFIED``: audio files or --manifest -> transcripts."""
    model, overrides = _load(args)
    args.tgt_lang = None
    return _speech(model, args, list(args.files), "transcribe", overrides)
