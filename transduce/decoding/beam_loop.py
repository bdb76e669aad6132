"""One batched beam loop for every beam search; a scorer supplies each step's scores.

Dimension letters: B sentences (still searching), K beam size, N = B * K rows, P candidates per row
(P = V when the scorer offers every token), V vocabulary, t output tokens so far, M rows kept.

The loop owns what every beam search shares (fairseq's rules; the step returns a ``BeamStep`` as in
fairseq2 ``generation/beam_search/algo.py``):
- rules: PAD and BOS are never chosen, and a row whose output reached its sentence's limit may only end
  (``mask_specials`` on the scorer's log-probs, before the scorer picks its candidates);
- candidates: each sentence's 2K best (beam, candidate) pairs by running total + candidate score;
- EOS: an EOS among a sentence's first K candidates finishes that hypothesis, scored
  total / length_penalty(length + 1) + the scorer's ``finish_score``; the next beam is the K best
  candidates that are not EOS;
- stopping: a sentence with K finished hypotheses (or no finite candidate left) leaves the batch;
- state: every row's state follows the candidate it continues with, through the scorer's ``select``;
- n-best: each sentence's finished hypotheses, best first.

A scorer (``BeamScorer``) supplies only its scores: a ``StepModel`` (beam.py: Transformer, RNN, ensemble,
with the coverage penalty as its finishing term) or attention + CTC prefix scores (joint.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
from torch import Tensor

from transduce.data.tokenizer import BOS, EOS
from transduce.decoding.hypothesis import Hypothesis, length_penalty, mask_specials

NEG_INF = float("-inf")


@dataclass
class Candidates:
    """What a scorer offers each row as its next token."""

    scores: Tensor
    """(N, P) score each candidate adds to its row's running total (-inf: forbidden)."""
    tokens: Tensor | None = None
    """(N, P) the candidates' token ids; None when column c is token c (P = V)."""


class BeamScorer(Protocol):
    """The scoring step of a beam search. Its state is whatever it needs per row; the loop only passes
    it back, so the state may be of any type."""

    def init(self, rows: Tensor) -> Any:
        """rows (N,) the sentence each beam row searches -> their state before the first token."""
        ...

    def score(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N,) each row's last token (BOS first) -> next-token log-probs (N, V), and the state
        that has read ``tokens``."""
        ...

    def candidates(self, log_probs: Tensor, state: Any) -> tuple[Candidates, Any]:
        """log_probs (N, V) from ``score`` after the loop's rules (-inf where forbidden) -> the candidates
        the loop ranks, and the state ``select`` needs to continue with any of them."""
        ...

    def select(self, state: Any, rows: Tensor, columns: Tensor) -> Any:
        """The next beam's state: row rows[m] (M,) extended by its candidate in column columns[m]."""
        ...

    def finish_score(self, state: Any, row: int) -> float:
        """Term added to the length-normalized score of a hypothesis that ends on ``row`` (0.0: none)."""
        ...


@dataclass
class BeamStep:
    """Each searching sentence's 2K best candidates, best first."""

    beams: Tensor
    """(B, 2K) the beam (0..K-1) each candidate extends."""
    columns: Tensor
    """(B, 2K) its column in that row's ``Candidates``."""
    tokens: Tensor
    """(B, 2K) its token."""
    scores: Tensor
    """(B, 2K) running total of the beam plus the candidate's score."""

    def take(self, order: Tensor) -> BeamStep:
        """order (B, K') positions among the 2K -> the step restricted to them."""
        return BeamStep(self.beams.gather(1, order), self.columns.gather(1, order), self.tokens.gather(1, order),
                        self.scores.gather(1, order))


def check_beam(beam: int, nbest: int) -> None:
    """Reject a beam that cannot return ``nbest`` hypotheses."""
    if beam < 1:
        raise ValueError(f"beam size must be >= 1, got {beam}")
    if nbest > beam:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")


def best_candidates(totals: Tensor, candidates: Candidates, beam: int) -> BeamStep:
    """totals (B, K) running totals of the beams, candidates of their N = B K rows -> the 2K best per sentence."""
    b, p = totals.size(0), candidates.scores.size(1)
    extended = (totals[:, :, None] + candidates.scores.view(b, beam, p)).view(b, beam * p)  # (B, K P)
    top_scores, top_ids = extended.topk(min(2 * beam, beam * p), dim=1)  # (B, 2K)
    columns = top_ids % p
    tokens = columns if candidates.tokens is None else candidates.tokens.reshape(b, beam * p).gather(1, top_ids)
    return BeamStep(top_ids // p, columns, tokens, top_scores)


@torch.no_grad()
def beam_loop(
    scorer: BeamScorer, limits: Tensor, *, beam: int, nbest: int = 1, len_penalty: float = 1.0,
    len_penalty_style: str = "fairseq",
) -> list[list[Hypothesis]]:
    """limits (B,) each sentence's output limit (EOS not counted) -> for each sentence its ``nbest`` best
    hypotheses; ``log_prob`` is the summed candidate scores, ``score`` the finished score above."""
    check_beam(beam, nbest)
    device, k, batch = limits.device, beam, limits.numel()
    state = scorer.init(torch.arange(batch, device=device).repeat_interleave(k))  # rows (N,) -> sentence
    active = torch.arange(batch, device=device)  # sentence ids still searching
    prefixes = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)  # (N, t+1)
    totals = torch.full((batch, k), NEG_INF, device=device)  # (B, K)
    totals[:, 0] = 0.0  # all beams start identical: keep one alive
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while active.numel():
        log_probs, state = scorer.score(prefixes[:, -1], state)  # (N, V)
        log_probs = mask_specials(log_probs, (step >= limits[active]).repeat_interleave(k))
        candidates, state = scorer.candidates(log_probs, state)
        top = best_candidates(totals, candidates, k)
        is_eos = top.tokens == EOS  # (B, 2K)
        divisor = float(length_penalty(step + 1, len_penalty, len_penalty_style))
        _finish(finished, active, prefixes, top, is_eos, k, divisor, partial(scorer.finish_score, state))
        next_totals, order = top.scores.masked_fill(is_eos, NEG_INF).topk(k, dim=1)  # (B, K)
        chosen = top.take(order)
        done = torch.tensor([len(finished[int(s)]) >= k for s in active], device=device)
        done |= ~next_totals[:, 0].isfinite()
        keep = (~done).nonzero().squeeze(1)  # (B',)
        rows = (keep[:, None] * k + chosen.beams[keep]).reshape(-1)  # (B' K,) rows continued
        prefixes = torch.cat([prefixes[rows], chosen.tokens[keep].reshape(-1, 1)], dim=1)
        state = scorer.select(state, rows, chosen.columns[keep].reshape(-1))
        totals, active = next_totals[keep], active[keep]
        step += 1
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _finish(
    finished: list[list[Hypothesis]], active: Tensor, prefixes: Tensor, top: BeamStep, is_eos: Tensor, k: int,
    divisor: float, finish_score: Callable[[int], float],
) -> None:
    """EOS among a sentence's first K candidates finishes that hypothesis, until the sentence has K; it scores
    total / divisor + finish_score(row)."""
    ends = (is_eos[:, :k] & top.scores[:, :k].isfinite()).nonzero().tolist()
    for i, j in ends:
        sentence = int(active[i])
        if len(finished[sentence]) < k:
            row = i * k + int(top.beams[i, j])
            total = float(top.scores[i, j])
            score = total / divisor + finish_score(row)
            finished[sentence].append(Hypothesis(prefixes[row, 1:].tolist(), score, total))
