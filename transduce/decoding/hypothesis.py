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
