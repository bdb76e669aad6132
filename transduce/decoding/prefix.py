"""Beam search whose decoder starts from a forced prefix of tags per sentence (the unified model's
``<translate> <de>``) instead of BOS, and never emits a tag. ``decoding/tagged.py`` is the one-tag case (the
speech translation models); the loop is ``beam_loop``.

Dimension letters: B sentences, P prefix length, K beam size, N = B * K rows, V vocabulary, S memory length,
D memory size, L never-emitted ids.
"""

from __future__ import annotations

import torch
from torch import Tensor

from transduce.decoding.beam import StepScorer, StepState
from transduce.decoding.beam_loop import Candidates, beam_loop, check_beam
from transduce.decoding.hypothesis import Hypothesis, StepModel

NEG_INF = float("-inf")


class PrefixScorer:
    """``StepScorer`` whose rows first read their sentence's prefix: all but its last token are stepped through
    the decoder when the rows are made (their log-probs unused), the last is fed in the place of the loop's BOS;
    the ``forbidden`` ids are never candidates."""

    def __init__(self, model: StepModel, memory: Tensor, memory_lens: Tensor, prefixes: Tensor, forbidden: Tensor
                 ) -> None:
        """memory (B, S, D), memory_lens (B,), prefixes (B, P) with P >= 1, forbidden (L,)."""
        if prefixes.dim() != 2 or prefixes.size(1) < 1:
            raise ValueError(f"prefixes must be (B, P) with P >= 1, got {tuple(prefixes.shape)}")
        self.inner = StepScorer(model, memory, memory_lens)
        self.prefixes, self.forbidden = prefixes, forbidden
        self.first: Tensor | None = None

    def init(self, rows: Tensor) -> StepState:
        state = self.inner.init(rows)
        forced = self.prefixes[rows]  # (N, P)
        for j in range(forced.size(1) - 1):
            _, state = self.inner.score(forced[:, j], state)
        self.first = forced[:, -1]  # (N,)
        return state

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
def prefix_beam_search(
    model: StepModel, memory: Tensor, memory_lens: Tensor, prefixes: Tensor, forbidden: Tensor, limits: Tensor, *,
    beam: int = 5, nbest: int = 1, len_penalty: float = 1.0, len_penalty_style: str = "fairseq",
) -> list[list[Hypothesis]]:
    """Encoder output memory (B, S, D) and lengths (B,), forced prefixes (B, P), never-emitted ids (L,), output
    limits (B,) (prefix not counted) -> each sentence's ``nbest`` best hypotheses (tokens without prefix and EOS)."""
    check_beam(beam, nbest)
    scorer = PrefixScorer(model, memory, memory_lens, prefixes, forbidden)
    return beam_loop(scorer, limits, beam=beam, nbest=nbest, len_penalty=len_penalty,
                     len_penalty_style=len_penalty_style)
