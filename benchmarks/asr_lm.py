"""WER and decoding speed of CTC prefix beam search with and without n-gram shallow fusion.

The encoder runs once; every row searches the same CTC log-probabilities, so the rows differ only in the
search: greedy, beam without LM (the baseline of the speed ratio), then beam + LM for each combination of
--weights x --bonuses (and --token-prune when given), and with --lexicon the same again with each of
--penalties for words the lexicon does not know. Rows are sorted by nothing: read the table, pick the
(weight, bonus) with the lowest dev WER, and put it in the model's decode section or pass it with --lm-weight
and --insertion-bonus. Tune on a dev set, never on test.

Run (captions model, LM trained with `transduce lm`, first 100 dev utterances):
    .venv/bin/transduce lm --model models/captions-conformer-ctc --text ../shared/data/multi30k/train.en.gz \\
        --normalize words --exclude work/data/captions/dev.jsonl --out work/lm/captions-8.arpa.gz --order 8
    nice -n 10 .venv/bin/python benchmarks/asr_lm.py --model models/captions-conformer-ctc \\
        --manifest work/data/captions/dev.jsonl --lm work/lm/captions-8.arpa.gz --limit 100
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

import torch
from asr_common import command_line, load_subset
from common import machine_line

from transduce.decoding.ctc import ctc_beam_search, ctc_greedy
from transduce.metrics.wer import cer, wer
from transduce.recognize import Recognizer
from transduce.speech_config import CTCDecodeConfig


def log_probs(recognizer: Recognizer, audio: list[Path], batch_size: int) -> list[torch.Tensor]:
    """Per utterance, CTC log-probs (T', V) on the CPU."""
    feats = [recognizer.features(a) for a in audio]
    out: list[torch.Tensor] = []
    for start in range(0, len(feats), batch_size):
        lp, lens = recognizer.log_probs(feats[start : start + batch_size])
        out += [lp[b, :n] for b, n in enumerate(lens.tolist())]
    return out


def search(recognizer: Recognizer, rows: list[torch.Tensor], cfg: CTCDecodeConfig) -> tuple[list[str], float]:
    """Best transcripts and search seconds for ``cfg`` (beam, token_prune, lm, lm_weight, insertion_bonus)."""
    fusion = recognizer.fusion(cfg)
    started = time.perf_counter()
    hyps = []
    for lp in rows:
        lens = torch.tensor([lp.size(0)])
        if cfg.beam <= 1:
            best = ctc_greedy(lp[None], lens)[0]
        else:
            best = ctc_beam_search(lp[None], lens, beam=cfg.beam, token_prune=cfg.token_prune, fusion=fusion)[0][0]
        hyps.append(best.tokens)
    seconds = time.perf_counter() - started
    return [text.strip() for text in recognizer.tokenizer.decode(hyps)], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="speech model folder")
    parser.add_argument("--manifest", required=True, help="dev manifest (tune here, not on test)")
    parser.add_argument("--lm", required=True, help="ARPA LM over the model's pieces (transduce lm)")
    parser.add_argument("--limit", type=int, default=100, help="first N utterances (0 = all)")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--token-prune", type=int, default=0, help="tokens per frame (0 = all)")
    parser.add_argument("--weights", default="0.3,0.5,0.7", help="comma-separated LM weights")
    parser.add_argument("--bonuses", default="0.5,1.0,1.5", help="comma-separated insertion bonuses")
    parser.add_argument("--lexicon", help="known words (transduce lm --lexicon): adds rows with a word penalty")
    parser.add_argument("--penalties", default="5,10", help="comma-separated OOV penalties for --lexicon rows")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    utts = load_subset(args.manifest, args.limit)
    refs = [u.text for u in utts]
    recognizer = Recognizer.load(args.model)
    rows = log_probs(recognizer, [u.audio for u in utts], batch_size=16)
    audio_seconds = sum(u.duration for u in utts)
    print(f"{len(utts)} utterances ({audio_seconds:.0f} s of audio) from {args.manifest}; {machine_line(args.threads)}")
    base = CTCDecodeConfig(beam=args.beam, token_prune=args.token_prune, lm=args.lm)
    configs = [("greedy", CTCDecodeConfig(beam=1)), (f"beam {args.beam}", base)]
    penalties = [None] + ([float(p) for p in args.penalties.split(",")] if args.lexicon else [])
    for weight, bonus, penalty in itertools.product(map(float, args.weights.split(",")),
                                                    map(float, args.bonuses.split(",")), penalties):
        cfg = replace(base, lm_weight=weight, insertion_bonus=bonus)
        if penalty is None:
            configs.append((f"beam {args.beam} + LM", cfg))
        else:
            configs.append((f"+ lexicon {penalty:g}", replace(cfg, lexicon=args.lexicon, oov_penalty=penalty)))
    print(f"{'search':<16}{'weight':>7}{'bonus':>7}{'WER':>8}{'CER':>8}{'search RTF':>12}{'x beam time':>12}")
    baseline = None
    best = None
    for name, cfg in configs:
        hyps, seconds = search(recognizer, rows, cfg)
        baseline = seconds if name.startswith("beam") and baseline is None else baseline
        w, c = wer(hyps, refs), cer(hyps, refs)
        ratio = f"{seconds / baseline:.2f}" if baseline else "-"
        print(f"{name:<16}{cfg.lm_weight:>7.2f}{cfg.insertion_bonus:>7.2f}{w:>8.2f}{c:>8.2f}"
              f"{seconds / audio_seconds:>12.4f}{ratio:>12}")
        if cfg.lm_weight and (best is None or w < best[0]):
            best = (w, cfg)
    if best is not None:
        w, cfg = best
        lexicon = f", lexicon with oov_penalty {cfg.oov_penalty}" if cfg.lexicon else ""
        print(f"best on this set: WER {w:.2f} at lm_weight {cfg.lm_weight}, insertion_bonus {cfg.insertion_bonus}"
              + lexicon)
        print("reproduce: " + command_line("asr_lm.py", [("--model", args.model), ("--manifest", args.manifest),
                                                         ("--lm", args.lm), ("--limit", args.limit),
                                                         ("--beam", args.beam), ("--token-prune", args.token_prune),
                                                         ("--weights", args.weights), ("--bonuses", args.bonuses),
                                                         ("--lexicon", args.lexicon),
                                                         ("--penalties", args.penalties if args.lexicon else None)]))


if __name__ == "__main__":
    main()
