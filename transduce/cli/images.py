"""Image subcommands: ``data text-images`` / ``text-images-import`` / ``digit-images``, and ``transcribe``,
``evaluate`` and the ``translate``/``evaluate --asr`` cascade when the model reads images (an OCR model), and
``translate``/``evaluate`` of an end-to-end image translation model over image manifests."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from transduce.errors import UsageError

if TYPE_CHECKING:
    from transduce.cascade import Cascade
    from transduce.data.images import ImageLine
    from transduce.read_images import ImageRecognizer, ImageTranslator


def data(args: argparse.Namespace) -> int:
    """``transduce data text-images`` (``--heldout``: the reserved font families), ``text-images-import`` and
    ``digit-images``."""
    from transduce.data import text_images

    try:
        if args.dataset == "text-images-import":
            lines = text_images.import_line_images(args.list, args.out, height=args.height)
            print(f"{len(lines)} images written to {args.out} ({lines[0].id.rsplit('-', 1)[0]}.jsonl)")
        elif args.dataset == "digit-images":
            splits = text_images.prepare_digit_images(args.out, train=args.train, dev=args.dev, seed=args.seed)
            print(f"digit images written to {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
        elif args.heldout:
            test = text_images.prepare_heldout_images(args.out, args.source, heldout=True, seed=args.seed,
                                                      sentences=args.test_sentences, height=args.height,
                                                      workers=args.workers)
            print(f"text-images test: {len(test)} lines in the reserved families, written to {args.out}/test.jsonl")
        else:
            text_images.prepare_text_images(args.out, args.source, seed=args.seed, height=args.height,
                                            train_sentences=args.train_sentences, dev_sentences=args.dev_sentences,
                                            workers=args.workers)
    except ValueError as err:  # DataError (a ValueError) keeps its message; bad family choices read the same
        raise UsageError(str(err)) from None
    return 0


def _lines(path: str, reader: ImageRecognizer | ImageTranslator) -> list[ImageLine]:
    from transduce.data.images import read_image_manifest

    return read_image_manifest(path, check_images=True, height=reader.height)


def transcribe(args: argparse.Namespace, recognizer: ImageRecognizer, overrides: dict[str, object]) -> int:
    """Image files -> ``FILE<TAB>TEXT`` (``--nbest``: ``FILE<TAB>SCORE<TAB>TEXT``); ``--manifest`` -> ``{"id",
    "text"}`` JSON lines in its order."""
    if args.stream:
        raise UsageError(f"{args.model}: an OCR model reads whole images; leave out --stream")
    if args.manifest:
        lines = _lines(args.manifest, recognizer)
        for item, text in zip(lines, recognizer.transcribe([x.image for x in lines], **overrides), strict=True):
            print(json.dumps({"id": item.id, "text": text}, ensure_ascii=False))
        return 0
    nbest = max(args.nbest, 1)
    if nbest > 1:
        overrides.update(nbest=nbest, beam=max(nbest, int(overrides.get("beam", recognizer.config.decode.beam))))  # type: ignore[call-overload]
    for path, row in zip(args.files, recognizer.search(args.files, **overrides), strict=True):
        for hyp in row:
            fields = [path] + ([f"{hyp.score:.4f}"] if nbest > 1 else []) + [hyp.text]
            if args.timestamps:  # each token's first pixel column
                fields.append(json.dumps([[p, t] for p, t in zip(hyp.tokens, hyp.times, strict=True)],
                                         ensure_ascii=False))
            print("\t".join(fields))
    return 0


def evaluate(args: argparse.Namespace, recognizer: ImageRecognizer, overrides: dict[str, object]) -> int:
    """CER/WER and images per second of an OCR model on an image manifest, as JSON."""
    from pathlib import Path

    from transduce.metrics.wer import alignment_report, cer, error_counts, wer

    if args.stream:
        raise UsageError(f"{args.model}: an OCR model reads whole images; leave out --stream")
    lines = _lines(args.manifest, recognizer)
    started = time.perf_counter()
    hyps = recognizer.transcribe([x.image for x in lines], **overrides)
    seconds = time.perf_counter() - started
    refs = [x.text for x in lines]
    if args.report:
        Path(args.report).write_text(alignment_report([x.id for x in lines], hyps, refs))
    decode = {**vars(recognizer.config.decode), **overrides}
    result = {"wer": round(wer(hyps, refs), 2), "cer": round(cer(hyps, refs), 2), **error_counts(hyps, refs),
              "images": len(lines), "seconds": round(seconds, 2), "images_per_second": round(len(lines) / seconds, 2),
              "beam": decode["beam"], "mode": decode["mode"]}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def reads_images(cascade: Cascade) -> bool:
    from transduce.read_images import ImageRecognizer

    return isinstance(cascade.recognizer, ImageRecognizer)


def translate_manifest(args: argparse.Namespace, cascade: Cascade, overrides: dict[str, object]) -> int:
    """The cascade over an image manifest: ``{"id", "text"}`` JSON lines in its order."""
    lines = _lines(args.manifest, cascade.recognizer)  # type: ignore[arg-type]
    for item, text in zip(lines, cascade.translate([x.image for x in lines], None, **overrides), strict=True):
        print(json.dumps({"id": item.id, "text": text}, ensure_ascii=False))
    return 0


def evaluate_cascade(args: argparse.Namespace, cascade: Cascade, lang: str, overrides: dict[str, object]) -> int:
    """BLEU/chrF of OCR -> (truecaser) -> MT against an image manifest's ``lang`` translations, with the OCR and
    total seconds and images per second, as JSON (the speech cascade's score keys)."""
    lines = _translated_lines(args.manifest, cascade.recognizer, lang)  # type: ignore[arg-type]
    started = time.perf_counter()
    sources = cascade.transcribe([x.image for x in lines])
    ocr_seconds = time.perf_counter() - started
    hyps = cascade.translator.translate(sources, **overrides)
    _report(args, lines, lang, hyps, time.perf_counter() - started, truecase=args.truecase,
            ocr_seconds=round(ocr_seconds, 2))
    return 0


def translate_e2e(args: argparse.Namespace, translator: ImageTranslator, overrides: dict[str, object]) -> int:
    """An image translation model over an image manifest: ``{"id", "text"}`` JSON lines in its order."""
    lines = _lines(args.manifest, translator)
    for item, text in zip(lines, translator.translate([x.image for x in lines], args.tgt_lang, **overrides),
                          strict=True):
        print(json.dumps({"id": item.id, "text": text}, ensure_ascii=False))
    return 0


def evaluate_e2e(args: argparse.Namespace, translator: ImageTranslator, lang: str, overrides: dict[str, object]
                 ) -> int:
    """BLEU/chrF of an image translation model against an image manifest's ``lang`` translations, as JSON (the
    cascade's keys)."""
    lines = _translated_lines(args.manifest, translator, lang)
    started = time.perf_counter()
    hyps = translator.translate([x.image for x in lines], lang, **overrides)
    _report(args, lines, lang, hyps, time.perf_counter() - started,
            beam=overrides.get("beam", translator.config.decode.beam))
    return 0


def _translated_lines(path: str, reader: ImageRecognizer | ImageTranslator, lang: str) -> list[ImageLine]:
    """The manifest's lines; a DataError naming the first without a ``lang`` translation."""
    from transduce.data.text import DataError

    lines = _lines(path, reader)
    missing = next((x for x in lines if lang not in x.translation), None)
    if missing is not None:
        raise DataError(f"{path}: line {missing.id!r} has no {lang!r} translation")
    return lines


def _report(args: argparse.Namespace, lines: list[ImageLine], lang: str, hyps: list[str], seconds: float,
            **settings: object) -> None:
    """Write --output, then print the scores against the lines' ``lang`` translations, ``settings`` and speed."""
    from transduce.cli.st import translation_scores

    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(f"{h}\n" for h in hyps)
    result: dict[str, Any] = {**translation_scores(hyps, [x.translation[lang] for x in lines], lang),
                              "tgt_lang": lang, "images": len(lines), **settings, "seconds": round(seconds, 2),
                              "images_per_second": round(len(lines) / seconds, 2)}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
