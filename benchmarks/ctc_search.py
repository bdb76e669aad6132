"""CTC prefix beam search: the original pure-Python search vs the fast one, side by side in one run.

Run (the bundled streaming digits model's log-probs on the digits dev set of the held-out FSDD speaker nicolas,
then random peaked log-probs over a 1000-token vocabulary like the captions model's):
    nice -n 10 .venv/bin/python benchmarks/ctc_search.py
Quick check:
    nice -n 10 .venv/bin/python benchmarks/ctc_search.py --limit 10 --big-frames 10

Each search is fed the log-probs --chunk frames at a time (as a stream is) and asked for its best hypothesis after
every chunk (a partial) and its n-best at the end. Per utterance the reference runs, then the fast search, so load
from other processes hits both alike. Printed per beam: frames per second of each, the speed ratio, and whether the
two returned the same hypotheses, timestamps and scores (within 1e-9 relative) everywhere.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from asr_common import command_line
from common import REPO, machine_line
from onnx_stream import dev_set

from transduce.decoding.ctc import CTCHypothesis, CTCPrefixSearch
from transduce.decoding.ctc_prefix_reference import ReferencePrefixSearch
from transduce.recognize import Recognizer

Search = CTCPrefixSearch | ReferencePrefixSearch


def run(search: Search, log_probs: torch.Tensor, chunk: int) -> tuple[list[CTCHypothesis], float]:
    """Feed (T, V) log-probs chunk by chunk with a partial after each -> the final n-best and the seconds taken."""
    started = time.perf_counter()
    for piece in log_probs.split(chunk):
        search.advance(piece)
        search.nbest(1)
    nbest = search.nbest(search.beam, final=True)
    return nbest, time.perf_counter() - started


def same(a: list[CTCHypothesis], b: list[CTCHypothesis]) -> bool:
    return [(h.tokens, h.timestamps) for h in a] == [(h.tokens, h.timestamps) for h in b] and all(
        x.score == y.score or math.isclose(x.score, y.score, rel_tol=1e-9) for x, y in zip(a, b, strict=True))


def compare(utterances: list[torch.Tensor], beam: int, token_prune: int, chunk: int) -> tuple[float, float, bool]:
    """Both searches over every utterance -> frames/s of the reference, of the fast search, and whether they agree."""
    seconds, agree = [0.0, 0.0], True
    for log_probs in utterances:
        want, ref_s = run(ReferencePrefixSearch(beam=beam, token_prune=token_prune), log_probs, chunk)
        got, fast_s = run(CTCPrefixSearch(beam=beam, token_prune=token_prune), log_probs, chunk)
        seconds[0] += ref_s
        seconds[1] += fast_s
        agree = agree and same(got, want)
    frames = sum(lp.size(0) for lp in utterances)
    return frames / seconds[0], frames / seconds[1], agree


def peaked(frames: int, vocab: int, seed: int) -> torch.Tensor:
    """Random (T, V) log-probs shaped like a trained CTC model's: blank wins 70% of frames, a random token the rest."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(frames, vocab, generator=g)
    winner = torch.where(torch.rand(frames, generator=g) < 0.7, 0, torch.randint(1, vocab, (frames,), generator=g))
    logits[torch.arange(frames), winner] += 9
    return logits.log_softmax(-1)


def real_log_probs(model: Path, data: Path, fsdd: Path, limit: int) -> list[torch.Tensor]:
    """The model's CTC log-probs (T', V) of the first ``limit`` dev utterances, each encoded whole."""
    recognizer = Recognizer.load(model)
    waves, _ = dev_set(data, fsdd, limit)
    found = []
    for wave in waves:
        log_probs, lens = recognizer.log_probs([recognizer.features(wave)])
        found.append(log_probs[0, : int(lens[0])])
    return found


def table(title: str, utterances: list[torch.Tensor], beams: list[int], token_prune: int, chunk: int) -> None:
    frames, vocab = sum(lp.size(0) for lp in utterances), utterances[0].size(1)
    prune = f", {token_prune} tokens per frame" if token_prune else ""
    print(f"\n{title}: {len(utterances)} utterances, {frames} frames, V={vocab}{prune}, fed {chunk} frames at a time")
    print(f"{'beam':>6}{'reference fr/s':>16}{'fast fr/s':>12}{'speed-up':>10}{'same output':>13}")
    for beam in beams:
        ref, fast, agree = compare(utterances, beam, token_prune, chunk)
        print(f"{beam:>6}{ref:>16.0f}{fast:>12.0f}{fast / ref:>9.1f}x{'yes' if agree else 'NO':>13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "digits-hybrid-streaming")
    parser.add_argument("--data", type=Path, default=REPO / "work" / "data" / "digits-dev",
                        help="digits dev set (made here when missing: the recipe's dev split only)")
    parser.add_argument("--fsdd", type=Path, default=REPO.parent / "shared" / "data" / "fsdd")
    parser.add_argument("--limit", type=int, default=100, help="dev utterances")
    parser.add_argument("--beams", default="1,4,8,20", help="beam widths, comma-separated")
    parser.add_argument("--chunk", type=int, default=4, help="frames per advance call (16 = 640 ms chunks)")
    parser.add_argument("--vocab", type=int, default=1000, help="vocabulary of the random log-probs")
    parser.add_argument("--big-frames", type=int, default=40,
                        help="random frames per utterance at --vocab (the reference takes ~0.3 s a frame at beam 20)")
    parser.add_argument("--big-utterances", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    beams = [int(b) for b in args.beams.split(",")]
    print(command_line("ctc_search.py", [("--limit", args.limit), ("--beams", args.beams), ("--chunk", args.chunk),
                                         ("--vocab", args.vocab), ("--big-frames", args.big_frames),
                                         ("--big-utterances", args.big_utterances)]))
    print(machine_line(1))
    table(f"{args.model.name} log-probs on digits dev", real_log_probs(args.model, args.data, args.fsdd, args.limit),
          beams, 0, args.chunk)
    big = [peaked(args.big_frames, args.vocab, seed) for seed in range(args.big_utterances)]
    table("random peaked log-probs", big, beams, 0, args.chunk)
    table("random peaked log-probs, captions model's pruning", big, beams, 8, args.chunk)


if __name__ == "__main__":
    main()
