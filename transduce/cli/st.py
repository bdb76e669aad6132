"""Speech translation subcommands: the ``data speech-translation`` / ``data st-import`` recipes, ``translate`` /
``evaluate`` with ``--asr`` (the cascade: recognize, then translate) and with an end-to-end speech translation
``--model`` (``SpeechTranslator``); both print the same formats."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from transduce.cli import images
from transduce.errors import UsageError


def data(args: argparse.Namespace) -> int:
    """``transduce data speech-translation``, ``transduce data st-import`` and ``transduce data st-kd``."""
    from transduce.data.speech_translation import parse_langs

    if args.dataset == "st-kd":
        return _distill(args)
    try:
        if args.dataset == "speech-translation":
            from transduce.data.speech_translation import prepare_speech_translation

            langs = parse_langs(args.langs)
            prepare_speech_translation(args.out, source=args.source, langs=langs, seed=args.seed,
                                       train_sentences=args.train_sentences, dev_sentences=args.dev_sentences,
                                       workers=args.workers)
            return 0
        from transduce.data.st_import import import_st

        splits = parse_langs(args.splits, "--splits") if args.splits else ()
        for split, count in import_st(args.source, args.out, tgt_lang=args.tgt_lang, splits=splits,
                                      clips=args.clips).items():
            print(f"{split}: {count} utterances written to {args.out}/{split}.jsonl")
    except ValueError as err:
        raise UsageError(str(err)) from None
    return 0


def _distill(args: argparse.Namespace) -> int:
    """``transduce data st-kd``: the teacher's translations into the manifest's translation_kd."""
    from transduce.cli.commands import _load_translator
    from transduce.st_distill import distill_manifest

    teacher = _load_translator(args.model)
    overrides = {name: getattr(args, name) for name in ("beam", "batch_size") if getattr(args, name) is not None}
    distill_manifest(args.manifest, args.out, teacher, lang=args.lang, **overrides)
    return 0


def _check(args: argparse.Namespace) -> None:
    """Options that only make sense with or without --asr."""
    if args.asr is None:
        given = "--tgt-lang" if getattr(args, "tgt_lang", None) else "--truecase" if args.truecase else "--manifest"
        raise UsageError(f"{args.command}: {given} goes with --asr DIR (a cascade of a speech and a translation model) "
                         "or a speech translation --model")
    clashing = [name for name in ("input", "ensemble", "rerank", "plot_attention", "src", "ref", "ref_tok", "quantize")
                if getattr(args, name, None)]
    if clashing:
        raise UsageError(f"--asr translates speech with --model alone; leave out --{clashing[0].replace('_', '-')}")
    if getattr(args, "nbest", 1) > 1:
        raise UsageError("--asr prints one translation per utterance; leave out --nbest")


def _load(args: argparse.Namespace):
    from transduce.cascade import Cascade

    try:
        cascade = Cascade.load(args.asr, args.model, truecase=args.truecase)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.tgt_lang not in (None, cascade.config.data.tgt_lang):
        raise UsageError(f"--tgt-lang {args.tgt_lang}: {args.model} translates into {cascade.config.data.tgt_lang}")
    return cascade


def translate(args: argparse.Namespace) -> int:
    """Audio files -> ``FILE<TAB>TRANSLATION``; ``--manifest`` -> ``{"id", "text"}`` JSON lines in its order."""
    from transduce.cli.commands import _decode_overrides
    from transduce.data.manifest import read_manifest

    _check(args)
    if bool(args.sentences) == bool(args.manifest):
        raise UsageError("--asr translates audio files given as arguments or the utterances of --manifest (one of "
                         "the two)")
    cascade = _load(args)
    overrides = _decode_overrides(args)
    if args.manifest and images.reads_images(cascade):
        return images.translate_manifest(args, cascade, overrides)
    if args.manifest:
        utts = read_manifest(args.manifest, check_audio=True)
        for utt, text in zip(utts, cascade.translate([u.audio for u in utts], **overrides), strict=True):
            print(json.dumps({"id": utt.id, "text": text}, ensure_ascii=False))
        return 0
    for path, text in zip(args.sentences, cascade.translate(args.sentences, **overrides), strict=True):
        print(f"{path}\t{text}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """BLEU, chrF and tokenized-lowercased BLEU of the cascade against the manifest's translations, and its
    real-time factor, as JSON."""
    from transduce.cli.commands import _decode_overrides
    from transduce.data.speech_translation import read_st_manifest

    _check(args)
    if not args.manifest:
        raise UsageError("--asr evaluates the utterances of a speech translation --manifest")
    cascade = _load(args)  # it refuses a --tgt-lang the cascade does not produce
    lang = args.tgt_lang or cascade.config.data.tgt_lang
    overrides = _decode_overrides(args)
    if images.reads_images(cascade):
        return images.evaluate_cascade(args, cascade, lang, overrides)
    utts = read_st_manifest(args.manifest, [lang], check_audio=True)
    started = time.perf_counter()
    sources = cascade.transcribe([u.utt.audio for u in utts])
    asr_seconds = time.perf_counter() - started
    hyps = cascade.translator.translate(sources, **overrides)
    seconds = time.perf_counter() - started
    _report(args, hyps, utts, lang, seconds, truecase=args.truecase, asr_seconds=round(asr_seconds, 2))
    return 0



def expand_cascade(args: argparse.Namespace) -> None:
    """``--model`` a bundled cascade folder (with ``cascade.json``) -> ``--asr`` its speech model and ``--model``
    its translation model, as if both were given."""
    from transduce.cascade import cascade_parts

    model = getattr(args, "model", None)
    parts = cascade_parts(model) if model and not getattr(args, "asr", None) else None
    if parts is not None:
        args.asr, args.model = (str(p) for p in parts)


def use_recognizer_of_cascade(args: argparse.Namespace) -> None:
    """``transcribe --model`` a bundled cascade folder -> its speech (or image) recognizer part, whose transcripts
    the cascade translates."""
    from transduce.cascade import cascade_parts

    parts = cascade_parts(args.model) if getattr(args, "model", None) else None
    if parts is not None:
        args.model = str(parts[0])


def end_to_end(args: argparse.Namespace) -> bool:
    """``--model`` is an end-to-end speech translation model (and there is no --asr)."""
    if getattr(args, "asr", None) or not getattr(args, "model", None):
        return False
    from transduce.speech_translate import SpeechTranslator
    from transduce.tasks import open_folder

    try:
        kind, _, _ = open_folder(args.model)
    except (FileNotFoundError, ValueError):  # not a model folder of ours (an export, a typo): the caller says so
        return False
    return issubclass(kind.inference, SpeechTranslator)


def _load_e2e(args: argparse.Namespace) -> tuple[Any, dict[str, object]]:
    """The SpeechTranslator of --model and the search overrides; options of other models are refused."""
    from transduce.speech_translate import SpeechTranslator

    clashing = [name for name in ("input", "ensemble", "rerank", "rerank_weight", "rerank_weights", "plot_attention",
                                  "coverage_penalty", "src", "ref", "ref_tok", "quantize", "truecase", "mode",
                                  "ctc_weight", "reverse_weight", "token_prune", "report", "lang")
                if getattr(args, name, None)]
    if clashing:
        raise UsageError(f"{args.model} translates speech end to end; leave out --{clashing[0].replace('_', '-')}")
    if getattr(args, "nbest", 1) > 1:
        raise UsageError(f"{args.model}: speech translation prints one translation per utterance; leave out --nbest")
    translator = SpeechTranslator.load(args.model)
    translator.tag(args.tgt_lang)  # an unknown language fails before any audio is read
    overrides = {name: getattr(args, name) for name in ("beam", "len_penalty", "batch_size", "left_chunks")
                 if getattr(args, name, None) is not None}
    if getattr(args, "chunk_ms", None):  # evaluate: the streaming-equivalent chunk mask on the encoder
        overrides["chunk_size"] = translator.chunk_frames(args.chunk_ms)
    return translator, overrides


def translate_e2e(args: argparse.Namespace) -> int:
    """Audio files -> ``FILE<TAB>TRANSLATION``; ``--manifest`` -> ``{"id", "text"}`` JSON lines in its order."""
    from transduce.data.manifest import read_manifest

    if bool(args.sentences) == bool(args.manifest):
        raise UsageError(f"{args.model} translates audio files given as arguments or the utterances of --manifest "
                         "(one of the two)")
    translator, overrides = _load_e2e(args)
    if args.manifest and getattr(translator, "reads_images", False):
        return images.translate_e2e(args, translator, overrides)
    if args.manifest:
        utts = read_manifest(args.manifest, check_audio=True)
        texts = translator.translate([u.audio for u in utts], args.tgt_lang, **overrides)
        for utt, text in zip(utts, texts, strict=True):
            print(json.dumps({"id": utt.id, "text": text}, ensure_ascii=False))
        return 0
    for path, text in zip(args.sentences, translator.translate(args.sentences, args.tgt_lang, **overrides),
                          strict=True):
        print(f"{path}\t{text}")
    return 0


def evaluate_e2e(args: argparse.Namespace) -> int:
    """BLEU, chrF and tokenized-lowercased BLEU of the end-to-end model against the manifest's translations in
    --tgt-lang (default: the model's first language), and its real-time factor, as JSON (the cascade's keys)."""
    from transduce.data.speech_translation import read_st_manifest

    if not args.manifest:
        raise UsageError(f"{args.model} evaluates the utterances of a speech translation --manifest")
    translator, overrides = _load_e2e(args)
    lang = args.tgt_lang or translator.langs[0]
    if getattr(translator, "reads_images", False):
        return images.evaluate_e2e(args, translator, lang, overrides)
    utts = read_st_manifest(args.manifest, [lang], check_audio=True)
    started = time.perf_counter()
    hyps = translator.translate([u.utt.audio for u in utts], lang, **overrides)
    seconds = time.perf_counter() - started
    _report(args, hyps, utts, lang, seconds, beam=overrides.get("beam", translator.config.decode.beam),
            chunk_size=overrides.get("chunk_size", translator.config.decode.chunk_size))
    return 0


def _report(args: argparse.Namespace, hyps: list[str], utts: list[Any], lang: str, seconds: float,
            **settings: object) -> None:
    """Write --output, then print the scores of ``hyps`` against the utterances' ``lang`` translations and the
    real-time factor as JSON (the keys the cascade and the end-to-end model share, then ``settings``)."""
    refs = [u.translation[lang] for u in utts]
    audio_seconds = sum(u.utt.duration for u in utts)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(f"{h}\n" for h in hyps)
    result = {
        **translation_scores(hyps, refs, lang),
        "tgt_lang": lang, "utterances": len(utts), "audio_seconds": round(audio_seconds, 1), **settings,
        "seconds": round(seconds, 2), "rtf": round(seconds / audio_seconds, 4),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


def translation_scores(hyps: list[str], refs: list[str], lang: str) -> dict[str, object]:
    """sacreBLEU BLEU/chrF and tokenized-lowercased BLEU (the Multi30k convention) of ``hyps`` against ``refs``."""
    from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu

    return {**sacre_scores(hyps, refs),
            "bleu_tok_lc": tokenized_bleu(hyps, [mmt_tokenize(r, lang) for r in refs], lang),
            "bleu_tok_lc_convention": f"lowercase + Moses punct-norm + Moses tokenizer ({lang}), sacreBLEU "
                                      "tokenize=none"}
