"""One function per subcommand: turn parsed arguments into library calls."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from transduce.data.text import read_lines, read_text_stream
from transduce.errors import DataError, UsageError


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def data(args: argparse.Namespace) -> int:
    if args.dataset == "multi30k":
        from transduce.data.multi30k import prepare_multi30k

        prepare_multi30k(args.out, langs=tuple(args.pairs.split("-")), source=args.source)
    elif args.dataset == "digits":
        from transduce.data.captions import TRAIN_VOICES
        from transduce.data.digits import prepare_digits

        voices = TRAIN_VOICES if args.tts_voices == "default" else _names(args.tts_voices)
        prepare_digits(args.out, source=args.source, seed=args.seed, dev_speakers=_names(args.dev_speakers),
                       test_speakers=_names(args.test_speakers), tts_voices=voices if args.tts_utterances else (),
                       tts_utterances=args.tts_utterances, tts_styles=args.tts_styles,
                       tts_full_band=args.tts_full_band, workers=args.workers)
    elif args.dataset == "captions":
        from transduce.data.captions import prepare_captions

        prepare_captions(args.out, source=args.source, seed=args.seed, train_sentences=args.train_sentences,
                         dev_sentences=args.dev_sentences, workers=args.workers)
    elif args.dataset in ("text-images", "text-images-import", "digit-images"):
        from transduce.cli import images

        return images.data(args)
    elif args.dataset in ("speech-translation", "st-import", "st-kd"):
        from transduce.cli import st

        return st.data(args)
    elif args.dataset == "manifest":
        from transduce.data.manifest import convert_to_manifest

        count = convert_to_manifest(args.source, args.out)
        print(f"{count} utterances written to {args.out}")
    elif args.dataset == "feedback":
        from transduce.data.feedback import export_feedback

        for summary in export_feedback(args.db, args.out, model_dirs=args.model_dir, models=args.model,
                                       dev_fraction=args.dev_fraction, seed=args.seed, updates=args.updates,
                                       lr_scale=args.lr_scale):
            print(summary)
    else:
        from transduce.data.toy import write_toy

        out = write_toy(args.out, task=args.task, train=args.train, seed=args.seed)
        print(f"toy {args.task} task written to {out}")
    return 0


def train(args: argparse.Namespace) -> int:
    from transduce.cli.config import load_recipe
    from transduce.tasks import get_task
    from transduce.train.trainer import Trainer

    cfg = load_recipe(args.recipe, args.overrides)
    out = Trainer(cfg, args.out, show_progress=not args.no_progress, kind=get_task(cfg.task)).fit(resume=args.resume)
    if out is not None:
        print(f"done: model in {out}")
    return 0


def _decode_overrides(args: argparse.Namespace) -> dict[str, object]:
    names = {"beam": "beam", "len_penalty": "len_penalty", "batch_size": "batch_size",
             "coverage_penalty": "coverage_penalty", "rerank_weight": "rerank_weight"}
    if (getattr(args, "coverage_penalty", None) or 0.0) < 0:
        raise UsageError(f"--coverage-penalty must be >= 0, got {args.coverage_penalty}")
    if not 0.0 <= (getattr(args, "rerank_weight", None) or 0.0) <= 1.0:
        raise UsageError(f"--rerank-weight must be in [0, 1], got {args.rerank_weight}")
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg, None) is not None}
    if getattr(args, "rerank_weights", None):
        overrides["rerank_weights"] = args.rerank_weights
    return overrides


def _members(values: list[str] | None) -> tuple[str, ...] | None:
    """--ensemble/--rerank values: none given = the model's own config list, ["none"] = no other model."""
    return None if not values else () if values == ["none"] else tuple(values)


def _load_translator(path: str, ensemble: list[str] | None = None, rerank: list[str] | None = None,
                     rerank_weights: tuple[float, ...] = (), quantize: str | None = None):
    """``ensemble``/``rerank``: the --ensemble/--rerank values (see ``_members``); ``rerank_weights``: the
    --rerank-weights value, checked against the rerankers loaded; ``quantize``: --quantize."""
    from transduce.decoding.rerank import rerank_shares
    from transduce.translate import Translator

    try:
        translator = Translator.load(path, ensemble=_members(ensemble), rerank=_members(rerank), quantize=quantize)
    except ValueError as err:  # weights that do not fit the config, ensemble vocabularies that differ
        raise UsageError(str(err)) from None
    if rerank_weights:
        try:
            rerank_shares(len(translator.rerankers), rerank_weights)
        except ValueError as err:
            raise UsageError(f"--rerank-weights: {err}") from None
    return translator


def _input_lines(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The sentences to translate (arguments, --input files or stdin, read as UTF-8 lines by
    ``iter_lines``'s rules) and where each came from ("FILE:LINE", "<stdin>:LINE", "argument N")."""
    if args.sentences and args.input:
        raise UsageError("give sentences either as arguments or with --input, not both")
    if args.sentences:
        return list(args.sentences), [f"argument {i}" for i in range(1, len(args.sentences) + 1)]
    if not args.input:
        lines = read_text_stream(sys.stdin)
        return lines, [f"<stdin>:{i}" for i in range(1, len(lines) + 1)]
    lines, where = [], []
    for path in args.input:
        found = read_lines(path)
        lines += found
        where += [f"{path}:{i}" for i in range(1, len(found) + 1)]
    return lines, where


def _check_lengths(translator, lines: list[str], where: list[str]) -> None:
    """A DataError naming the first line too long for a model with a position table (model.max_positions):
    its pieces + EOS, and the longest output the search may write (decode.max_len_a/b) + BOS, must fit."""
    import torch

    from transduce.decoding.hypothesis import max_lengths

    positions = getattr(translator.config.model, "max_positions", None)
    if positions is None or not lines:
        return
    decode = translator.config.decode
    sizes = torch.arange(1, positions + 1)  # source lengths with EOS that fit the encoder
    fits = sizes[max_lengths(sizes, decode.max_len_a, decode.max_len_b) + 1 <= positions]  # ... and the decoder
    longest = int(fits.max()) if fits.numel() else 0
    for place, ids in zip(where, translator.tokenizers.src.encode(lines), strict=True):
        if len(ids) + 1 > longest:
            raise DataError(f"{place}: too long for this model ({len(ids)} pieces; at most {max(longest - 1, 0)} fit "
                            f"its model.max_positions {positions} with decode.max_len_a {decode.max_len_a} and "
                            f"max_len_b {decode.max_len_b}); split the line")


def translate(args: argparse.Namespace) -> int:
    from transduce.cli import st, unified

    if unified.is_unified(args):
        return unified.translate(args)
    if getattr(args, "task", None):
        raise UsageError("--task picks what a unified model does; this --model does one thing")
    st.expand_cascade(args)
    if st.end_to_end(args):
        return st.translate_e2e(args)
    if args.asr or args.manifest or args.truecase or args.tgt_lang:
        return st.translate(args)
    lines, where = _input_lines(args)
    if args.plot_attention is None and (args.attention_layer is not None or args.attention_head is not None):
        raise UsageError("--attention-layer/--attention-head choose what --plot-attention draws; give --plot-attention")
    if args.plot_attention is not None and args.ensemble not in ([], ["none"]):
        raise UsageError("--plot-attention draws one model's attention; leave out --ensemble")
    alone = args.plot_attention is not None
    translator = _load_translator(args.model, ["none"] if alone else args.ensemble, ["none"] if alone else args.rerank,
                                  args.rerank_weights, args.quantize)
    _check_lengths(translator, lines, where)
    overrides = _decode_overrides(args)
    if args.plot_attention is not None:
        _check_attention(translator, args)
    if args.nbest > 1:
        beam = overrides.get("beam", translator.config.decode.beam)
        overrides.update(nbest=args.nbest, beam=max(args.nbest, int(beam)))  # type: ignore[call-overload]
    rows = translator.search(lines, **overrides)
    for row in rows:
        texts = translator.tokenizers.tgt.decode([h.tokens for h in row])
        if args.nbest > 1:
            print("".join(f"{h.score:.4f}\t{text}\n" for h, text in zip(row, texts, strict=True)))
        else:
            print(texts[0])
    if args.plot_attention is not None:
        _plot_attention(translator, args, lines, [row[0].tokens for row in rows])
    return 0


def _plot_attention(translator, args: argparse.Namespace, lines: list[str], outputs: list[list[int]]) -> None:
    """Teacher-force the best outputs to get the attention the search used; one PNG per line."""
    from transduce.align import align_ids, attention_label, write_alignments

    layer, head = args.attention_layer, args.attention_head
    alignments = align_ids(translator, lines, outputs, layer=layer, head=head, batch_size=args.batch_size)
    written = write_alignments(alignments, Path(args.plot_attention),
                               attention=attention_label(translator.model, layer, head))
    print(f"{len(written)} attention plots written to {args.plot_attention}", file=sys.stderr)


def _check_attention(translator, args: argparse.Namespace) -> None:
    from transduce.align import check_attention_choice

    if translator.config.data.reverse_target:
        raise UsageError(f"{args.model} is a right-to-left model (data.reverse_target): attention plots and "
                         "alignments read left to right; use a left-to-right model")
    try:
        check_attention_choice(translator.model, args.attention_layer, args.attention_head)
    except ValueError as err:
        raise UsageError(str(err)) from None


def align(args: argparse.Namespace) -> int:
    from transduce.align import align_texts, attention_label, pharaoh, write_alignments

    src, tgt = read_lines(args.src), read_lines(args.tgt)
    if len(src) != len(tgt):
        raise UsageError(f"{args.src} has {len(src)} lines but {args.tgt} has {len(tgt)}")
    translator = _load_translator(args.model, ["none"])  # attention of one model
    _check_attention(translator, args)
    alignments = align_texts(translator, src, tgt, layer=args.attention_layer, head=args.attention_head,
                             batch_size=args.batch_size)
    write_alignments(alignments, Path(args.out), png=args.format in ("png", "both"),
                     txt=args.format in ("txt", "both"), label="pair",
                     attention=attention_label(translator.model, args.attention_layer, args.attention_head))
    for i, alignment in enumerate(alignments, start=1):
        print(f"{i}\t{alignment.log_prob:.4f}\t{pharaoh(alignment)}")
    return 0


def transcribe(args: argparse.Namespace) -> int:
    from transduce.cli import speech, st, unified

    if unified.is_unified(args):
        return unified.transcribe(args)
    st.use_recognizer_of_cascade(args)
    return speech.transcribe(args, UsageError)


def lm(args: argparse.Namespace) -> int:
    from transduce.cli import speech

    return speech.train_lm(args)


def evaluate(args: argparse.Namespace) -> int:
    from transduce.cli import st, unified
    from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu

    if unified.is_unified(args):
        return unified.evaluate(args)
    st.expand_cascade(args)
    if st.end_to_end(args):
        return st.evaluate_e2e(args)
    if args.asr or args.truecase or args.tgt_lang:
        return st.evaluate(args)
    if args.manifest:
        if args.src or args.ref:
            raise UsageError("--manifest (speech) and --src/--ref (translation) do not go together")
        if args.rerank or args.rerank_weight is not None or args.rerank_weights:
            raise UsageError("--rerank/--rerank-weight(s) rerank translations; speech models use --ensemble")
        from transduce.cli import speech

        return speech.evaluate(args)
    if not (args.src and args.ref):
        raise UsageError("translation needs --src and --ref; speech needs --manifest")
    src, refs = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(refs):
        raise UsageError(f"{args.src} has {len(src)} lines but {args.ref} has {len(refs)}")
    translator = _load_translator(args.model, args.ensemble, args.rerank, args.rerank_weights, args.quantize)
    _check_lengths(translator, src, [f"{args.src}:{i}" for i in range(1, len(src) + 1)])
    lang = args.lang or translator.config.data.tgt_lang
    refs_tok = read_lines(args.ref_tok) if args.ref_tok else [mmt_tokenize(r, lang) for r in refs]
    overrides = _decode_overrides(args)
    decode = replace(translator.config.decode, **overrides)  # what this search uses
    started = time.perf_counter()
    hyps = translator.translate(src, **overrides)
    seconds = time.perf_counter() - started
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hyps))
    result = {
        **sacre_scores(hyps, refs),
        "bleu_tok_lc": tokenized_bleu(hyps, refs_tok, lang),
        "bleu_tok_lc_convention": f"lowercase + Moses punct-norm + Moses tokenizer ({lang}), sacreBLEU tokenize=none",
        "sentences": len(src),
        "beam": decode.beam,
        **({"ensemble": list(decode.ensemble)} if decode.ensemble else {}),
        **({"rerank": list(decode.rerank), "rerank_weight": decode.rerank_weight,
            "rerank_weights": list(decode.rerank_weights)} if decode.rerank else {}),
        "seconds": round(seconds, 2),
        "sentences_per_second": round(len(src) / seconds, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


def average(args: argparse.Namespace) -> int:
    import torch

    from transduce.models.folder import write_model_folder
    from transduce.tasks import get_task, parse_config
    from transduce.train import checkpoint as ckpt

    run = Path(args.run)
    paths = ckpt.step_checkpoints(run / "checkpoints")[-args.last :]
    if not paths:
        raise UsageError(f"{run / 'checkpoints'}: no step_N.pt checkpoints")
    newest = ckpt.load(paths[-1])
    if not isinstance(newest, dict) or not {"model", "config", "progress"} <= newest.keys():
        raise DataError(f"{paths[-1]}: not a training checkpoint (no model, config and progress)")
    card = {"weights": f"average of {[p.name for p in paths]}", "updates": newest["progress"]["update"],
            "train_seconds": round(newest["progress"]["train_seconds"])}
    cfg = parse_config(newest["config"])
    kind = get_task(cfg.task)
    out = write_model_folder(args.out, ckpt.average(paths), newest["config"], kind.folder_files(cfg, run), card,
                             dtype=getattr(torch, args.dtype), aliases=kind.tied_aliases(cfg))
    print(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name}) into {out} ({args.dtype})")
    return 0


def info(args: argparse.Namespace) -> int:
    from transduce.cascade import CASCADE, cascade_parts
    from transduce.tasks import open_folder

    parts = cascade_parts(args.path)
    if parts is not None:  # a bundled cascade: each part as its own folder
        print(f"a speech translation cascade ({CASCADE}): speech model {parts[0]}, then translation model {parts[1]}")
        for part in parts:
            info(argparse.Namespace(path=str(part)))
        return 0
    kind, cfg, folder = open_folder(args.path)
    for line in kind.describe(folder, cfg):
        print(line)
    if folder.card:
        print(json.dumps(folder.card, indent=2))
    return 0
