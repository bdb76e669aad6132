"""What searches return, and the protocol they need from a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from transduce.data.tokenizer import BOS, EOS, PAD


@dataclass
class Hypothesis:
    """One output: token ids without BOS/EOS, the length-normalized score used for ranking,
    and the summed log-probability."""

    tokens: list[int]
    score: float
    log_prob: float


class StepModel(Protocol):
    """Anything with ``encode``, ``init_state`` and ``step`` can be searched."""

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]: ...

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> Any: ...

    def step(self, tokens: Tensor, memory: Tensor, state: Any) -> tuple[Tensor, Any]: ...


class AttentionStepModel(StepModel, Protocol):
    """A ``StepModel`` that can also return the cross-attention weights (N, S) each step used
    (a Transformer: its last layer's, averaged over heads). Needed by the coverage penalty."""

    def step_with_attention(self, tokens: Tensor, memory: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]: ...


def gnmt_coverage_penalty(attention_sums: Tensor, mask: Tensor, beta: float) -> Tensor:
    """GNMT coverage penalty (Wu et al. 2016) ``beta * sum_i log(min(sum_j p_ij, 1))``, added to the
    length-normalized score: attention_sums (N, S) are each source position's attention summed over
    the output steps (EOS included), mask (N, S) True on real source positions -> (N,) fp32, <= 0
    for beta > 0. A position that got no attention at all gives -inf."""
    capped = attention_sums.float().clamp(max=1.0).log()  # (N, S)
    return beta * capped.masked_fill(~mask, 0.0).sum(dim=-1)


def length_penalty(length: Tensor | int, alpha: float, style: str) -> Tensor | float:
    """Divisor of a summed log-prob: fairseq ``len^alpha`` or GNMT ``((5 + len) / 6)^alpha``.
    ``length`` counts output tokens including EOS."""
    if style == "fairseq":
        return length**alpha
    if style == "gnmt":
        return ((5 + length) / 6) ** alpha
    raise ValueError(f"unknown length penalty style {style!r}; choose fairseq or gnmt")


def max_lengths(src_lens: Tensor, a: float, b: int) -> Tensor:
    """Per-sentence output limits a * source length + b (EOS not counted)."""
    return (a * src_lens.float() + b).long().clamp(min=1)


def mask_specials(lp: Tensor, forced: Tensor) -> Tensor:
    """Forbid PAD/BOS everywhere and everything but EOS on rows at their length limit."""
    lp[:, PAD] = float("-inf")
    lp[:, BOS] = float("-inf")
    if forced.any():
        only_eos = torch.full_like(lp[0], float("-inf"))
        only_eos[EOS] = 0.0
        lp[forced] = lp[forced] + only_eos
    return lp
