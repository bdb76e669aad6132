"""Beam search over a ``StepModel`` (Transformer, RNN, ``Ensemble``), with length penalty, GNMT coverage
penalty and n-best: ``StepScorer`` supplies the scores, ``beam_loop`` does the rest.

Dimension letters: B sentences, K beam size, N = B * K rows, V vocabulary, S source (memory) length,
D memory size.
A sentence stops when it has K finished hypotheses (fairseq's rule); it then leaves the batch.
The coverage penalty only re-scores finished hypotheses (as in GNMT); it needs a model with
``step_with_attention`` and, when 0, the model's plain ``step`` runs as without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from transduce.decoding.beam_loop import Candidates, beam_loop, check_beam
from transduce.decoding.hypothesis import Hypothesis, StepModel, gnmt_coverage_penalty, max_lengths
from transduce.nn.masks import padding_mask


@dataclass
class Coverage:
    """Search state of the coverage penalty: each row's attention summed over its steps."""

    sums: Tensor
    """(N, S) attention weights summed over the steps taken (fp32)."""
    mask: Tensor
    """(N, S) True on real source (memory) positions."""
    beta: float
    """Coverage penalty weight."""

    def add(self, weights: Tensor) -> Coverage:
        return Coverage(self.sums + weights.float(), self.mask, self.beta)

    def reorder(self, indices: Tensor) -> Coverage:
        return Coverage(self.sums.index_select(0, indices), self.mask.index_select(0, indices), self.beta)

    def penalty(self, row: int) -> float:
        return float(gnmt_coverage_penalty(self.sums[row], self.mask[row], self.beta))


def check_coverage(model: StepModel, beta: float) -> None:
    """Reject a coverage penalty weight ``beta`` the model cannot serve."""
    if beta < 0:
        raise ValueError(f"coverage_penalty must be >= 0, got {beta}")
    if beta and not hasattr(model, "step_with_attention"):
        raise ValueError(f"coverage_penalty needs a model with step_with_attention; {type(model).__name__} has none")


@dataclass
class StepState:
    """The beam rows' state in a ``StepModel`` search."""

    memory: Tensor
    """(N, S, D) each row's encoder output."""
    decoder: Any
    """The model's incremental state (it owns ``reorder``)."""
    coverage: Coverage | None
    """Attention sums for the coverage penalty; None without it."""

    def reorder(self, indices: Tensor) -> StepState:
        coverage = None if self.coverage is None else self.coverage.reorder(indices)
        return StepState(self.memory[indices], self.decoder.reorder(indices), coverage)


class StepScorer:
    """A ``BeamScorer`` from a ``StepModel``: every token is a candidate, scored by the model's next-token
    log-prob; with ``coverage_penalty`` > 0 a finished hypothesis also gets the GNMT coverage penalty.

    memory (B, S, D), memory_lens (B,): the encoder output of the B sentences."""

    def __init__(self, model: StepModel, memory: Tensor, memory_lens: Tensor, coverage_penalty: float = 0.0) -> None:
        check_coverage(model, coverage_penalty)
        self.model, self.memory, self.memory_lens, self.beta = model, memory, memory_lens, coverage_penalty

    def init(self, rows: Tensor) -> StepState:
        memory, memory_lens = self.memory[rows], self.memory_lens[rows]  # (N, S, D), (N,)
        coverage = None
        if self.beta:
            mask = padding_mask(memory_lens, memory.size(1))  # (N, S)
            coverage = Coverage(torch.zeros(mask.shape, device=memory.device), mask, self.beta)
        return StepState(memory, self.model.init_state(memory, memory_lens), coverage)

    def score(self, tokens: Tensor, state: StepState) -> tuple[Tensor, StepState]:
        if state.coverage is None:
            lp, decoder = self.model.step(tokens, state.memory, state.decoder)  # (N, V)
            return lp, StepState(state.memory, decoder, None)
        lp, decoder, weights = self.model.step_with_attention(  # type: ignore[attr-defined]
            tokens, state.memory, state.decoder)
        return lp, StepState(state.memory, decoder, state.coverage.add(weights))  # weights (N, S)

    def candidates(self, log_probs: Tensor, state: StepState) -> tuple[Candidates, StepState]:
        return Candidates(log_probs), state

    def select(self, state: StepState, rows: Tensor, columns: Tensor) -> StepState:
        return state.reorder(rows)

    def finish_score(self, state: StepState, row: int) -> float:
        return 0.0 if state.coverage is None else state.coverage.penalty(row)


@torch.no_grad()
def beam_search(
    model: StepModel, src: Tensor, src_lens: Tensor, *, beam: int = 5, nbest: int = 1,
    len_penalty: float = 1.0, len_penalty_style: str = "fairseq",
    max_len_a: float = 1.2, max_len_b: int = 10, coverage_penalty: float = 0.0,
) -> list[list[Hypothesis]]:
    """src (B, S), src_lens (B,) -> for each sentence its ``nbest`` best hypotheses. A finished
    hypothesis scores log_prob / length_penalty + ``gnmt_coverage_penalty(.., coverage_penalty)``."""
    check_beam(beam, nbest)
    check_coverage(model, coverage_penalty)
    memory, memory_lens = model.encode(src, src_lens)
    scorer = StepScorer(model, memory, memory_lens, coverage_penalty)
    return beam_loop(scorer, max_lengths(src_lens, max_len_a, max_len_b), beam=beam, nbest=nbest,
                     len_penalty=len_penalty, len_penalty_style=len_penalty_style)
