"""One function per subcommand: turn parsed arguments into library calls."""

from __future__ import annotations

import argparse
import json
import sys
import time
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
        from transduce.data.digits import prepare_digits

        prepare_digits(args.out, source=args.source, seed=args.seed, dev_speakers=_names(args.dev_speakers),
                       test_speakers=_names(args.test_speakers))
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
    names = {"beam": "beam", "len_penalty": "len_penalty", "batch_size": "batch_size"}
    return {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}


def _load_translator(path: str):
    from transduce.translate import Translator

    return Translator.load(path)


def translate(args: argparse.Namespace) -> int:
    if args.sentences and args.input:
        raise UsageError("give sentences either as arguments or with --input, not both")
    lines = list(args.sentences)
    for path in args.input:
        lines.extend(read_lines(path))
    if not args.sentences and not args.input:
        lines = [line.rstrip("\n") for line in sys.stdin]
    translator = _load_translator(args.model)
    overrides = _decode_overrides(args)
    if args.nbest > 1:
        for row in translator.translate_nbest(lines, args.nbest, **overrides):
            for text, score in row:
                print(f"{score:.4f}\t{text}")
            print()
    else:
        for text in translator.translate(lines, **overrides):
            print(text)
    return 0


def transcribe(args: argparse.Namespace) -> int:
    from transduce.cli import speech

    return speech.transcribe(args, UsageError)


def evaluate(args: argparse.Namespace) -> int:
    from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu

    if args.manifest:
        if args.src or args.ref:
            raise UsageError("--manifest (speech) and --src/--ref (translation) do not go together")
        from transduce.cli import speech

        return speech.evaluate(args)
    if not (args.src and args.ref):
        raise UsageError("translation needs --src and --ref; speech needs --manifest")
    src, refs = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(refs):
        raise UsageError(f"{args.src} has {len(src)} lines but {args.ref} has {len(refs)}")
    translator = _load_translator(args.model)
    lang = args.lang or translator.config.data.tgt_lang
    refs_tok = read_lines(args.ref_tok) if args.ref_tok else [mmt_tokenize(r, lang) for r in refs]
    started = time.perf_counter()
    hyps = translator.translate(src, **_decode_overrides(args))
    seconds = time.perf_counter() - started
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hyps))
    result = {
        **sacre_scores(hyps, refs),
        "bleu_tok_lc": tokenized_bleu(hyps, refs_tok, lang),
        "bleu_tok_lc_convention": f"lowercase + Moses punct-norm + Moses tokenizer ({lang}), sacreBLEU tokenize=none",
        "sentences": len(src),
        "beam": _decode_overrides(args).get("beam", translator.config.decode.beam),
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
    out = write_model_dir(Path(args.out), ckpt.average(paths), newest["config"], run, card)
    print(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name}) into {out}")
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
        print(f"{len(tokenizer)} {speech_cfg.data.tokenizer} tokens, {speech_cfg.data.num_mel_bins} mel bins "
              f"at {speech_cfg.data.sample_rate} Hz")
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
          f"({cfg.data.tokenizer}, {'joint' if cfg.data.joint_vocab else 'separate'})")
    if card:
        print(json.dumps(card, indent=2))
    return 0
