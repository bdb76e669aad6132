"""Attention for RNN decoders: one query vector per step against the encoder memory.

Dimension letters: B batch (x beams), S source length, Q query size (decoder hidden),
M memory size (encoder output), A attention (energy) size, H heads, E = M / H value size per head,
C location-conv channels. Masks are boolean, True = real source position (``nn/masks.py``).

Every module has the same two calls:

* ``prepare(memory (B, S, M)) -> keys (B, S, K)``: the query-independent part, computed once
  per sentence and kept in the decoder state (so beam search reorders it with the rest);
* ``forward(query (B, Q), keys, memory, mask (B, S), prev_weights (B, S) | None,
  coverage (B, S) | None) -> (context (B, M), weights (B, S))``.

``prev_weights`` is the previous step's alignment (read by ``LocationAwareAttention``);
``coverage`` is the sum of all previous alignments (Tu et al. 2016), fed into the additive energy
of the modules built with ``coverage=True`` and ignored by the others. Weights are a masked
softmax: exactly 0 on padding, and all 0 on a row with no real position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim of ``scores`` (..., S) where ``mask`` (..., S) is True.

    Masked positions get -inf before the softmax (never a large negative number, which
    overflows in fp16), hence exactly 0 after it. A row with no True position would be NaN
    (0 / 0); it becomes all zeros instead::

        >>> masked_softmax(torch.zeros(2, 3), torch.tensor([[True, True, False], [False] * 3]))
        tensor([[0.5000, 0.5000, 0.0000],
                [0.0000, 0.0000, 0.0000]])
    """
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return weights.masked_fill(~mask, 0.0)


class RNNAttention(Protocol):
    """What the RNN decoder needs from an attention module."""

    def prepare(self, memory: Tensor) -> Tensor: ...

    def __call__(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor,
                 prev_weights: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]: ...


def _attend(scores: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """scores (B, S), memory (B, S, M) -> context (B, M), weights (B, S)."""
    weights = masked_softmax(scores, mask)
    return (weights[:, None, :] @ memory)[:, 0], weights  # (B, 1, S) @ (B, S, M) -> (B, M)


class DotAttention(nn.Module):
    """Luong et al. 2015 "dot": score = q . h_s (needs Q == M)."""

    def prepare(self, memory: Tensor) -> Tensor:
        return memory  # (B, S, M)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor,
                prev_weights: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = (keys @ query[:, :, None])[:, :, 0]  # (B, S, Q) @ (B, Q, 1) -> (B, S)
        return _attend(scores, memory, mask)


class GeneralAttention(nn.Module):
    """Luong et al. 2015 "general": score = q . (W h_s); ``W h_s`` is the prepared key."""

    def __init__(self, query_dim: int, memory_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(memory_dim, query_dim, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, Q)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor,
                prev_weights: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = (keys @ query[:, :, None])[:, :, 0]  # (B, S, Q) @ (B, Q, 1) -> (B, S)
        return _attend(scores, memory, mask)


class AdditiveAttention(nn.Module):
    """Bahdanau et al. 2014 "concat": score = v . tanh(W_q q + W_k h_s [+ w_c cov_s]).

    With ``coverage`` the running sum of past weights enters the energy (Tu et al. 2016)."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int, *, coverage: bool = False) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.key_proj = nn.Linear(memory_dim, attention_dim)
        self.coverage_proj = nn.Linear(1, attention_dim, bias=False) if coverage else None
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, A)

    def energy(self, query: Tensor, keys: Tensor, coverage: Tensor | None) -> Tensor:
        """Pre-tanh energy (B, S, A)."""
        e = keys + self.query_proj(query)[:, None, :]  # (B, S, A)
        if self.coverage_proj is not None:
            if coverage is None:
                raise ValueError("this attention was built with coverage=True: pass the coverage vector")
            e = e + self.coverage_proj(coverage[:, :, None])  # (B, S, 1) -> (B, S, A)
        return e

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor,
                prev_weights: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = self.v(torch.tanh(self.energy(query, keys, coverage)))[:, :, 0]  # (B, S)
        return _attend(scores, memory, mask)


class LocationAwareAttention(nn.Module):
    """Chorowski et al. 2015: the additive energy also sees F * alpha_{i-1}, a 1-d convolution
    (C filters, odd ``kernel``) over the previous alignment: v . tanh(W_q q + W_k h_s + U f_s)."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int, *, channels: int = 10,
                 kernel: int = 15, coverage: bool = False) -> None:
        super().__init__()
        self.additive = AdditiveAttention(query_dim, memory_dim, attention_dim, coverage=coverage)
        if kernel % 2 == 0:
            raise ValueError(f"location kernel size must be odd, got {kernel}")
        self.conv = nn.Conv1d(1, channels, kernel, padding=kernel // 2, bias=False)
        self.location_proj = nn.Linear(channels, attention_dim, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        return self.additive.prepare(memory)  # (B, S, A)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor,
                prev_weights: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if prev_weights is None:
            raise ValueError("location-aware attention needs the previous step's weights")
        location = self.conv(prev_weights[:, None, :]).transpose(1, 2)  # (B, 1, S) -> (B, C, S) -> (B, S, C)
        e = self.additive.energy(query, keys, coverage) + self.location_proj(location)  # (B, S, A)
        scores = self.additive.v(torch.tanh(e))[:, :, 0]  # (B, S)
        return _attend(scores, memory, mask)


class MultiHeadAdditiveAttention(nn.Module):
    """H additive attentions, each with its own energy (size A / H) and its own value projection
    (M -> E = M / H); contexts are concatenated back to M. The returned weights (and so the
    coverage vector) are the mean over heads."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int, heads: int, *,
                 coverage: bool = False) -> None:
        super().__init__()
        for name, size in (("memory", memory_dim), ("attention", attention_dim)):
            if size % heads:
                raise ValueError(f"{name} size {size} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, attention_dim // heads
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.key_proj = nn.Linear(memory_dim, attention_dim)
        self.coverage_proj = nn.Linear(1, attention_dim, bias=False) if coverage else None
        bound = self.head_dim**-0.5
        self.v = nn.Parameter(torch.empty(heads, self.head_dim).uniform_(-bound, bound))
        bound = memory_dim**-0.5
        self.value_proj = nn.Parameter(torch.empty(heads, memory_dim // heads, memory_dim).uniform_(-bound, bound))

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, A)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor,
                prev_weights: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, s, _ = keys.shape
        e = keys + self.query_proj(query)[:, None, :]  # (B, S, A)
        if self.coverage_proj is not None:
            if coverage is None:
                raise ValueError("this attention was built with coverage=True: pass the coverage vector")
            e = e + self.coverage_proj(coverage[:, :, None])
        e = torch.tanh(e).view(b, s, self.heads, self.head_dim)  # (B, S, H, A/H)
        scores = torch.einsum("bsha,ha->bhs", e, self.v)  # (B, H, S)
        weights = masked_softmax(scores, mask[:, None, :])  # (B, H, S)
        per_head = weights @ memory  # (B, H, S) @ (B, S, M) -> (B, H, M)
        context = torch.einsum("bhm,hem->bhe", per_head, self.value_proj)  # (B, H, E)
        return context.reshape(b, -1), weights.mean(dim=1)  # (B, M), (B, S)


ATTENTIONS = ("dot", "general", "additive", "location", "multihead_additive")


def build_attention(kind: str, query_dim: int, memory_dim: int, *, attention_dim: int, heads: int = 1,
                    coverage: bool = False) -> RNNAttention:
    """One attention module by name (``ATTENTIONS``). Coverage needs an additive energy."""
    if coverage and kind in ("dot", "general"):
        raise ValueError(f"coverage is fed into an additive energy: attention {kind!r} has none "
                         f"(use additive, location or multihead_additive)")
    if kind == "dot" and query_dim != memory_dim:
        raise ValueError(f"dot attention needs equal query and memory sizes, got {query_dim} and {memory_dim}")
    builders: dict[str, Callable[[], RNNAttention]] = {
        "dot": lambda: DotAttention(),
        "general": lambda: GeneralAttention(query_dim, memory_dim),
        "additive": lambda: AdditiveAttention(query_dim, memory_dim, attention_dim, coverage=coverage),
        "location": lambda: LocationAwareAttention(query_dim, memory_dim, attention_dim, coverage=coverage),
        "multihead_additive": lambda: MultiHeadAdditiveAttention(query_dim, memory_dim, attention_dim, heads,
                                                                 coverage=coverage),
    }
    if kind not in builders:
        raise ValueError(f"unknown attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")
    return builders[kind]()
