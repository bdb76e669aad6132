"""One function per subcommand: turn parsed arguments into library calls."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from transduce.cli.config import load_recipe
from transduce.data.text import read_lines


class UsageError(ValueError):
    """Wrong combination of command-line arguments."""


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
    elif args.dataset == "manifest":
        from transduce.data.manifest import convert_to_manifest

        count = convert_to_manifest(args.source, args.out)
        print(f"{count} utterances written to {args.out}")
    else:
        from transduce.data.toy import write_toy

        out = write_toy(args.out, task=args.task, train=args.train, seed=args.seed)
        print(f"toy {args.task} task written to {out}")
    return 0


def train(args: argparse.Namespace) -> int:
    from transduce.train.trainer import Trainer

    cfg = load_recipe(args.recipe, args.overrides)
    out = Trainer(cfg, args.out, show_progress=not args.no_progress).fit(resume=args.resume)
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
                     rerank_weights: tuple[float, ...] = ()):
    """``ensemble``/``rerank``: the --ensemble/--rerank values (see ``_members``); ``rerank_weights``: the
    --rerank-weights value, checked against the rerankers loaded."""
    from transduce.decoding.rerank import rerank_shares
    from transduce.translate import Translator

    try:
        translator = Translator.load(path, ensemble=_members(ensemble), rerank=_members(rerank))
    except ValueError as err:  # weights that do not fit the config, ensemble vocabularies that differ
        raise UsageError(str(err)) from None
    if rerank_weights:
        try:
            rerank_shares(len(translator.rerankers), rerank_weights)
        except ValueError as err:
            raise UsageError(f"--rerank-weights: {err}") from None
    return translator


def translate(args: argparse.Namespace) -> int:
    if args.sentences and args.input:
        raise UsageError("give sentences either as arguments or with --input, not both")
    lines = list(args.sentences)
    for path in args.input:
        lines.extend(read_lines(path))
    if not args.sentences and not args.input:
        lines = [line.rstrip("\n") for line in sys.stdin]
    if args.plot_attention is None and (args.attention_layer is not None or args.attention_head is not None):
        raise UsageError("--attention-layer/--attention-head choose what --plot-attention draws; give --plot-attention")
    if args.plot_attention is not None and args.ensemble not in ([], ["none"]):
        raise UsageError("--plot-attention draws one model's attention; leave out --ensemble")
    alone = args.plot_attention is not None
    translator = _load_translator(args.model, ["none"] if alone else args.ensemble, ["none"] if alone else args.rerank,
                                  args.rerank_weights)
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
    from transduce.cli import speech

    return speech.transcribe(args, UsageError)


def lm(args: argparse.Namespace) -> int:
    from transduce.cli import speech

    return speech.train_lm(args)


def evaluate(args: argparse.Namespace) -> int:
    from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu

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
    translator = _load_translator(args.model, args.ensemble, args.rerank, args.rerank_weights)
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
    from transduce.train import checkpoint as ckpt
    from transduce.train.export import write_model_dir

    run = Path(args.run)
    paths = ckpt.step_checkpoints(run / "checkpoints")[-args.last :]
    if not paths:
        raise UsageError(f"{run / 'checkpoints'}: no step_N.pt checkpoints")
    newest = ckpt.load(paths[-1])
    card = {"weights": f"average of {[p.name for p in paths]}", "updates": newest["progress"]["update"],
            "train_seconds": round(newest["progress"]["train_seconds"])}
    import torch

    out = write_model_dir(Path(args.out), ckpt.average(paths), newest["config"], run, card,
                          dtype=getattr(torch, args.dtype))
    print(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name}) into {out} ({args.dtype})")
    return 0


def info(args: argparse.Namespace) -> int:
    import yaml

    from transduce.translate import load_model_dir, resolve_model_dir

    if yaml.safe_load((resolve_model_dir(args.path) / "config.yaml").read_text()).get("task") == "ctc":
        from transduce.recognize import load_ctc_dir

        ctc, tokenizer, speech_cfg, card = load_ctc_dir(args.path)
        m = speech_cfg.model
        print(f"{m.encoder} CTC encoder: {m.layers} layers, d={m.dim}, ffn={m.ffn_dim}, {m.heads} heads, "
              f"subsampling {m.subsampling}x, {sum(p.numel() for p in ctc.parameters()) / 1e6:.2f}M parameters")
        if m.decoder_layers:
            reverse = f" + {m.reverse_decoder_layers}-layer right-to-left" if m.reverse_decoder_layers else ""
            print(f"hybrid CTC/attention: {m.decoder_layers}-layer attention decoder{reverse}, "
                  f"trained with ctc_weight {m.ctc_weight}")
        if m.causal_conv and not m.utterance_norm:
            chunks = f"dynamic chunks up to {m.max_chunk} frames" if m.dynamic_chunk else "full context"
            print(f"streaming-capable (causal convolution, {chunks}); decode mode {speech_cfg.decode.mode}")
        print(f"{len(tokenizer)} {speech_cfg.data.tokenizer} tokens, {speech_cfg.data.num_mel_bins} mel bins "
              f"at {speech_cfg.data.sample_rate} Hz")
        print(f"decodes by default with {speech_cfg.decode.describe()}")
        if card:
            print(json.dumps(card, indent=2))
        return 0
    model, toks, cfg, card = load_model_dir(args.path)
    params = sum(p.numel() for p in model.parameters())
    m = cfg.model
    if cfg.task == "rnn_translation":
        print(f"{m.cell} encoder-decoder {m.encoder_layers}+{m.decoder_layers} layers, hidden {m.hidden}, "
              f"{m.attention} attention, {params / 1e6:.2f}M parameters")
    else:
        print(f"transformer {m.encoder_layers}+{m.decoder_layers} layers, d={m.dim}, ffn={m.ffn_dim}, "
              f"{m.heads} heads, {'pre' if m.pre_norm else 'post'}-LN, {params / 1e6:.2f}M parameters")
    print(f"{cfg.data.src_lang}->{cfg.data.tgt_lang}, vocabulary {len(toks.src)}/{len(toks.tgt)} "
          f"({cfg.data.tokenizer}, {'joint' if cfg.data.joint_vocab else 'separate'})"
          f"{', right to left (data.reverse_target)' if cfg.data.reverse_target else ''}")
    d = cfg.decode
    members = f", ensembled with {', '.join(d.ensemble)}" if d.ensemble else ""
    shares = f", shares {', '.join(map(str, d.rerank_weights))}" if d.rerank_weights else ""
    rerank = f", n-best reranked by {', '.join(d.rerank)} (weight {d.rerank_weight}{shares})" if d.rerank else ""
    print(f"decodes by default with beam {d.beam}, length penalty {d.len_penalty} ({d.len_penalty_style})"
          f"{members}{rerank}")
    if card:
        print(json.dumps(card, indent=2))
    return 0
