"""Beam search whose first decoder input is a per-sentence tag instead of BOS (multilingual decoders: ``<2de>``),
and whose output never contains a tag. A ``BeamScorer`` around ``StepScorer``; the loop is ``beam_loop``.

Dimension letters: B sentences, K beam size, N = B * K rows, V vocabulary, S memory length, D memory size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from transduce.decoding.beam import StepScorer, StepState
from transduce.decoding.beam_loop import Candidates, beam_loop, check_beam
from transduce.decoding.hypothesis import Hypothesis, StepModel

NEG_INF = float("-inf")


class TaggedScorer:
    """``StepScorer`` with two changes: each row's first input is its sentence's tag (the loop feeds BOS), and
    the tag ids are never candidates."""

    def __init__(self, model: StepModel, memory: Tensor, memory_lens: Tensor, tags: Tensor, forbidden: Tensor
                 ) -> None:
        """memory (B, S, D), memory_lens (B,), tags (B,) each sentence's first input, forbidden (L,) token ids
        never emitted (the tags)."""
        self.inner = StepScorer(model, memory, memory_lens)
        self.tags, self.forbidden = tags, forbidden
        self.first: Tensor | None = None

    def init(self, rows: Tensor) -> StepState:
        self.first = self.tags[rows]  # (N,) the rows' tags, fed at the first step
        return self.inner.init(rows)

    def score(self, tokens: Tensor, state: StepState) -> tuple[Tensor, StepState]:
        if self.first is not None:  # the first step: every row reads BOS from the loop
            tokens, self.first = self.first, None
        log_probs, state = self.inner.score(tokens, state)  # (N, V)
        log_probs[:, self.forbidden] = NEG_INF
        return log_probs, state

    def candidates(self, log_probs: Tensor, state: StepState) -> tuple[Candidates, StepState]:
        return Candidates(log_probs), state

    def select(self, state: StepState, rows: Tensor, columns: Tensor) -> StepState:
        return state.reorder(rows)

    def finish_score(self, state: StepState, row: int) -> float:
        return 0.0


@torch.no_grad()
def tagged_beam_search(
    model: StepModel, memory: Tensor, memory_lens: Tensor, tags: Tensor, forbidden: Tensor, limits: Tensor, *,
    beam: int = 5, nbest: int = 1, len_penalty: float = 1.0, len_penalty_style: str = "fairseq",
) -> list[list[Hypothesis]]:
    """Encoder output memory (B, S, D) and lengths (B,), first inputs tags (B,), never-emitted ids forbidden (L,),
    output limits (B,) -> each sentence's ``nbest`` best hypotheses (tokens without tag and EOS)."""
    check_beam(beam, nbest)
    scorer = TaggedScorer(model, memory, memory_lens, tags, forbidden)
    return beam_loop(scorer, limits, beam=beam, nbest=nbest, len_penalty=len_penalty,
                     len_penalty_style=len_penalty_style)
