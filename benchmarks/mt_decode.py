"""Decoding speed on Multi30k test_2016_flickr en->de: sentences/s for greedy and beam search,
and how much the incremental (KV-cached) decoder saves over recomputing the prefix.

Run (full size):
    .venv/bin/python benchmarks/mt_decode.py --model models/multi30k-en-de
Quick check:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mt_decode.py --threads 1 --limit 64 \\
        --uncached-limit 32

Loads --model, a folder with model.safetensors, config.yaml and spm.model, through
``transduce.translate.Translator`` when it is importable (else a small loader in this script).
If the folder does not exist it falls back to a randomly initialized recipe-size model with a
joint BPE 8000 trained on the training data, and says so: an untrained model's outputs run to
the length limit, so its speeds are not a trained model's.
Prints sentences/s and output tokens/s (EOS included) for cached greedy search (the baseline
row) and beam search (--beam, ratio to greedy) over the test set in length-sorted batches of
--batch-size; then greedy search that recomputes the whole decoder at every step against the
cached one on the first --uncached-limit sentences (asserting identical tokens), and beam search
against fairseq's reported 143 sentences/s (another machine, not measured here). Tokenization is
outside the timings. Ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import torch
import yaml
from common import (
    DEFAULT_DATA,
    REPO,
    joint_tokenizer,
    machine_line,
    read_pairs,
    recipe_config,
    text_file,
)
from safetensors.torch import load_file
from torch import Tensor

from transduce.config import DecodeConfig
from transduce.data.batching import pad
from transduce.data.text import read_lines
from transduce.data.tokenizer import BOS, EOS, PAD, Tokenizer
from transduce.decoding.corpus import search_corpus
from transduce.decoding.hypothesis import Hypothesis, max_lengths
from transduce.models.transformer import TransformerConfig, TransformerSeq2Seq, build
from transduce.train.corpus import Tokenizers

T = TypeVar("T")
FAIRSEQ_BEAM5_SENT_S = 143  # fairseq, beam 5: a reported figure, not measured here


def load_model_dir(folder: Path) -> tuple[TransformerSeq2Seq, Tokenizer, DecodeConfig, str]:
    """Model, source tokenizer and decode settings of an exported model folder, through
    ``transduce.translate.Translator`` when it is importable."""
    try:
        from transduce.translate import Translator
    except ImportError:
        return own_loader(folder)
    translator = Translator.load(folder, ensemble=())  # one model, even where its config names an ensemble
    config = getattr(translator, "config", None)
    decode = config.decode if config is not None else DecodeConfig()
    return translator.model.eval(), translator.tokenizers.src, decode, "Translator.load"


def own_loader(folder: Path) -> tuple[TransformerSeq2Seq, Tokenizer, DecodeConfig, str]:
    """The same from config.yaml, the SentencePiece model(s) and model.safetensors."""
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    toks = Tokenizers.load(folder, raw["data"]["joint_vocab"])
    model = build(TransformerConfig(**raw["model"]), len(toks.src), len(toks.tgt), PAD)
    weights = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model.eval(), toks.src, DecodeConfig(**raw.get("decode", {})), "this script's loader"


def random_model(args: argparse.Namespace) -> tuple[TransformerSeq2Seq, Tokenizer]:
    """Recipe-size model with random weights and a joint BPE on the training data."""
    en, de = read_pairs(Path(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        tok = joint_tokenizer(en, de, args.spm, Path(tmp))
    torch.manual_seed(args.seed)
    return build(recipe_config(), len(tok), len(tok), PAD).eval(), tok


@torch.inference_mode()
def greedy_uncached(model: TransformerSeq2Seq, src: Tensor, src_lens: Tensor, *,
                    max_len_a: float, max_len_b: int) -> list[list[int]]:
    """greedy_search without the KV cache: every step runs the whole decoder over the prefix
    and keeps the last position's logits. Same masking, length limits and stopping."""
    memory, memory_lens = model.encode(src, src_lens)
    limits = max_lengths(src_lens, max_len_a, max_len_b)
    active = torch.arange(src.size(0))  # sentence id of each row
    prefix = torch.full((src.size(0), 1), BOS, dtype=torch.long)  # (N, t + 1)
    outputs: list[list[int]] = [[] for _ in range(src.size(0))]
    step = 0
    while active.numel():
        logits = model.decoder(prefix, memory, memory_lens)[:, -1]  # (N, V)
        lp = logits.float().log_softmax(-1)
        lp[:, PAD] = float("-inf")
        lp[:, BOS] = float("-inf")
        forced = step >= limits[active]
        lp[forced] = torch.where(torch.arange(lp.size(1)) == EOS, lp[forced], float("-inf"))
        tokens = lp.max(dim=-1).indices
        done = tokens == EOS
        for row, (sent, tok) in enumerate(zip(active.tolist(), tokens.tolist(), strict=True)):
            if not done[row]:
                outputs[sent].append(tok)
        keep = (~done).nonzero().squeeze(1)
        active, memory, memory_lens = active[keep], memory[keep], memory_lens[keep]
        prefix = torch.cat([prefix[keep], tokens[keep, None]], dim=1)
        step += 1
    return outputs


def uncached_corpus(model: TransformerSeq2Seq, ids: list[list[int]], cfg: DecodeConfig
                    ) -> list[list[int]]:
    """Batches exactly as ``search_corpus`` makes them (sorted by length), results in order."""
    results: list[list[int]] = [[] for _ in ids]
    order = sorted((i for i, s in enumerate(ids) if s), key=lambda i: len(ids[i]))
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start : start + cfg.batch_size]
        seqs = [ids[i] + [EOS] for i in chunk]
        outs = greedy_uncached(model, pad(seqs), torch.tensor([len(s) for s in seqs]),
                               max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)
        for i, out in zip(chunk, outs, strict=True):
            results[i] = out
    return results


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    """fn(*args) and the seconds it took."""
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def report(name: str, hyps: list[list[Hypothesis]], seconds: float, base: float | None) -> float:
    """Print a row with its speed relative to ``base`` sentences/s (None: it is a base row);
    return its sentences/s."""
    rate = len(hyps) / seconds
    out_tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    ratio = f"{rate / base:8.2f}x" if base else f"{'1.00x':>9}"
    print(f"{name:32} {len(hyps):6d} {rate:8.1f} {out_tokens / seconds:10.0f} {ratio} "
          f"{out_tokens / len(hyps):8.1f}")
    return rate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "multi30k-en-de"),
                        help="exported model folder (random recipe-size model if missing)")
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder with test_2016_flickr.en[.gz] (and train.{en,de}[.gz])")
    parser.add_argument("--source", help="source file to decode (default: the test set in --data)")
    parser.add_argument("--spm", help="joint SentencePiece model for the random fallback model")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--limit", type=int, default=0, help="decode only the first N sentences")
    parser.add_argument("--uncached-limit", type=int, default=256,
                        help="sentences for the cached vs uncached comparison")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def load(args: argparse.Namespace) -> tuple[TransformerSeq2Seq, Tokenizer, DecodeConfig, bool]:
    """The model to time, its source tokenizer, decode settings, and whether it is trained."""
    folder = Path(args.model)
    if folder.exists():
        model, tok, decode, how = load_model_dir(folder)
        print(f"model: {folder} (loaded with {how})")
        return model, tok, decode, True
    model, tok = random_model(args)
    print(f"model: {folder} does not exist: RANDOMLY INITIALIZED recipe-size model, joint BPE "
          f"{len(tok)}; outputs run to the length limit, so these are not trained-model speeds")
    return model, tok, DecodeConfig(), False


def compare_uncached(model: TransformerSeq2Seq, subset: list[list[int]], cfg: DecodeConfig
                     ) -> float:
    """Time cached vs uncached greedy search on ``subset``; assert equal tokens; the speedup."""
    cached, cached_s = timed(search_corpus, model, subset, cfg)
    cached_rate = report(f"greedy (cached), first {len(subset)}", cached, cached_s, None)
    uncached, uncached_s = timed(uncached_corpus, model, subset, cfg)
    as_hyps = [[Hypothesis(out, 0.0, 0.0)] for out in uncached]
    report(f"greedy (uncached), first {len(subset)}", as_hyps, uncached_s, cached_rate)
    differ = sum(h[0].tokens != out for h, out in zip(cached, uncached, strict=True))
    assert differ == 0, f"cached and uncached greedy search differ on {differ} sentences"
    print(f"\nKV cache: cached greedy is {uncached_s / cached_s:.2f}x as fast as recomputing the "
          f"decoder at every step, identical tokens on all {len(subset)} sentences")
    return uncached_s / cached_s


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    model, tok, decode, trained = load(args)
    source = Path(args.source) if args.source else text_file(Path(args.data), "test_2016_flickr.en")
    lines = read_lines(source)[: args.limit or None]
    ids = tok.encode(lines)
    greedy = replace(decode, beam=1, nbest=1, batch_size=args.batch_size)
    beam = replace(decode, beam=args.beam, nbest=1, batch_size=args.batch_size)
    print(f"data: {len(lines)} sentences of {source.name} ({sum(map(len, ids)) / len(ids):.1f} "
          f"source tokens on average), batches of {args.batch_size}, max length "
          f"{decode.max_len_a} x source + {decode.max_len_b}, length penalty "
          f"{decode.len_penalty} ({decode.len_penalty_style})")
    for cfg in (greedy, beam):  # warm-up: kernel selection, allocator
        search_corpus(model, ids[:8], replace(cfg, batch_size=8))

    print(f"\n{'search':32} {'sents':>6} {'sent/s':>8} {'out tok/s':>10} {'vs base':>9} "
          f"{'out len':>8}")
    hyps, seconds = timed(search_corpus, model, ids, greedy)
    greedy_rate = report("greedy (cached)", hyps, seconds, None)
    hyps, seconds = timed(search_corpus, model, ids, beam)
    beam_rate = report(f"beam {args.beam} (cached)", hyps, seconds, greedy_rate)
    speedup = compare_uncached(model, ids[: args.uncached_limit], greedy)
    print(f"fairseq, beam 5: {FAIRSEQ_BEAM5_SENT_S} sentences/s, REPORTED ON A DIFFERENT MACHINE, "
          f"not measured here; beam {args.beam} here is {beam_rate / FAIRSEQ_BEAM5_SENT_S:.2f}x "
          f"that figure")
    print(f"summary: greedy {greedy_rate:.1f} sent/s, beam {args.beam} {beam_rate:.1f} sent/s "
          f"({beam_rate / greedy_rate:.2f}x greedy), KV cache {speedup:.2f}x faster than "
          f"recomputing ({'trained' if trained else 'RANDOM'} model, {args.threads} threads)")


if __name__ == "__main__":
    main()
