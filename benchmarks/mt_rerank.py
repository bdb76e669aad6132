"""N-best reranking on a dev set: tokenized-lowercased BLEU for every --len-penalties x --weights pair,
and what the reranking costs next to the search itself.

For each length penalty the searcher (--model with its own decode.ensemble) writes the beam's n-best
once; every --rerank model scores those hypotheses once (forced decoding); each weight (and each
--shares vector: the rerankers' relative weights, decode.rerank_weights) then only re-sorts. Weight 0 is
the search alone (the baseline row of each length penalty). Pick the setting with the best dev BLEU and
put it in the model's decode section (len_penalty, rerank, rerank_weight, rerank_weights) or pass
--len-penalty / --rerank / --rerank-weight / --rerank-weights. Tune on a dev set, never on test.

Run (the bundled English-German models on Multi30k val):
    .venv/bin/python benchmarks/mt_rerank.py --model models/multi30k-en-de-best \\
        --rerank models/multi30k-en-de-r2l --src work/data/multi30k/val.en --ref work/data/multi30k/val.de
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine_line

from transduce.data.text import read_lines
from transduce.decoding.rerank import rerank_nbest
from transduce.metrics.bleu import mmt_tokenize, tokenized_bleu
from transduce.translate import Translator


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the searching model folder (its decode.ensemble is used)")
    p.add_argument("--rerank", action="append", required=True, help="reranking model folder (repeatable)")
    p.add_argument("--src", required=True, help="dev source, one sentence per line")
    p.add_argument("--ref", required=True, help="dev references, detokenized")
    p.add_argument("--ref-tok", help="official tokenized lowercased references (else made from --ref)")
    p.add_argument("--beam", type=int, default=5, help="beam size = n-best size")
    p.add_argument("--len-penalties", type=floats, default=[1.0, 1.4, 2.0], help="comma-separated alphas")
    p.add_argument("--weights", type=floats, default=[0.0, 0.2, 0.3, 0.4, 0.5, 0.6], help="comma-separated")
    p.add_argument("--shares", type=lambda t: [floats(v.replace(":", ",")) for v in t.split(",")], default=[[]],
                   help="rerankers' relative weights to try, ':' within a vector, ',' between vectors "
                        "(e.g. 1:1,3:2,2:3; default equal shares)")
    p.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.weights = [0.0] + [w for w in args.weights if w != 0.0]  # the search alone comes first
    torch.set_num_threads(args.threads)
    src, refs = read_lines(args.src), read_lines(args.ref)
    lang_refs = read_lines(args.ref_tok) if args.ref_tok else None
    if args.limit:
        src, refs = src[: args.limit], refs[: args.limit]
        lang_refs = lang_refs[: args.limit] if lang_refs else None
    translator = Translator.load(args.model, rerank=args.rerank)  # a tgt->src reranker scores p(src | output)
    lang = translator.config.data.tgt_lang
    refs_tok = lang_refs or [mmt_tokenize(r, lang) for r in refs]
    decode = translator.config.decode
    print(machine_line(args.threads))
    print(f"{len(src)} sentences, beam {args.beam}; searcher {args.model}"
          f"{' + ' + ', '.join(decode.ensemble) if decode.ensemble else ''}; rerankers {', '.join(args.rerank)}")
    print(f"{'len_penalty':>11} {'weight':>6} {'shares':>9} {'BLEU':>6} {'vs w=0':>7}")
    best: tuple[float, float, float, list[float], float] = (float("-inf"), 0.0, 0.0, [], 0.0)
    search_s = rerank_s = 0.0
    for alpha in args.len_penalties:
        started = time.perf_counter()
        nbest = translator.search(src, beam=args.beam, nbest=args.beam, len_penalty=alpha, rerank_weight=0.0)
        searched = time.perf_counter()
        scores, lengths = translator.reranker_scores(src, nbest, batch_size=decode.batch_size)
        search_s, rerank_s = search_s + searched - started, rerank_s + time.perf_counter() - searched
        baseline = None
        for weight in args.weights:
            for shares in args.shares if weight else [[]]:
                ranked = rerank_nbest(nbest, scores, lengths, weight=weight, len_penalty=alpha,
                                      len_penalty_style=decode.len_penalty_style, keep=1, shares=shares)
                hyps = translator.tokenizers.tgt.decode([row[0].tokens for row in ranked])
                bleu = tokenized_bleu(hyps, refs_tok, lang)
                baseline = bleu if baseline is None else baseline
                named = ":".join(f"{x:g}" for x in shares) or "equal"
                print(f"{alpha:>11.2f} {weight:>6.2f} {named:>9} {bleu:>6.2f} {bleu - baseline:>+7.2f}")
                best = max(best, (bleu, alpha, weight, shares, baseline))
    bleu, alpha, weight, shares, baseline = best
    named = f" shares {':'.join(f'{x:g}' for x in shares)}" if shares else ""
    print(f"best: len_penalty {alpha} weight {weight}{named}: BLEU {bleu:.2f} ({bleu - baseline:+.2f} over the "
          f"search alone at that length penalty); reranking costs {rerank_s / search_s:.2f}x the search time "
          f"({search_s:.1f} s search, {rerank_s:.1f} s rerank)")


if __name__ == "__main__":
    main()
