"""Positions: encodings added to embeddings (sinusoidal, learned) and schemes inside self-attention (Shaw et al.
clipped relative keys, rotary). All accept an ``offset`` (steps already decoded) for incremental decoding."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor, nn


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos encodings (Vaswani et al. 2017), fairseq layout: [sin | cos]."""

    def __init__(self, dim: int, max_len: int = 1024) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
        angles = torch.arange(max_len, dtype=torch.float)[:, None] * freqs[None, :]  # (L, D/2)
        table = torch.cat([angles.sin(), angles.cos()], dim=1)
        if dim % 2:
            table = torch.cat([table, torch.zeros(max_len, 1)], dim=1)
        self.table: Tensor
        self.register_buffer("table", table, persistent=False)  # (L, D)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """-> (length, D) encodings for positions offset..offset+length-1."""
        if offset + length > self.table.size(0):
            raise ValueError(f"sequence of {offset + length} positions exceeds max_len")
        return self.table[offset : offset + length]


class LearnedPositions(nn.Module):
    """Trained position embeddings."""

    def __init__(self, dim: int, max_len: int = 1024) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        if offset + length > self.embedding.num_embeddings:
            raise ValueError(f"sequence of {offset + length} positions exceeds max_len")
        return self.embedding.weight[offset : offset + length]


def build_positions(kind: str, dim: int, max_len: int) -> nn.Module:
    kinds = {"sinusoidal": SinusoidalPositions, "learned": LearnedPositions}
    if kind not in kinds:
        raise ValueError(f"unknown positions {kind!r}; choose from {sorted(kinds)}")
    return kinds[kind](dim, max_len)


# Positions inside self-attention. Dimension letters: B batch, H heads, T query length, S key length,
# E head size, R relative distances (2K + 1 for clipping distance K).


class AttentionPositions(Protocol):
    """What ``MultiHeadAttention`` asks of a position scheme that lives inside self-attention. Queries are at
    positions offset..offset+T-1 and keys at 0..S-1 (offset = steps already cached)."""

    def rotate(self, x: Tensor, offset: int) -> Tensor:
        """Queries or new keys (B, H, T, E) -> the same, position-dependent (RoPE) or unchanged."""
        ...

    def bias(self, q: Tensor, offset: int, key_len: int) -> Tensor | None:
        """Additive float scores (B, H, T, S) for SDPA's mask, or None."""
        ...


class ShawRelativePositions(nn.Module):
    """Clipped relative position embeddings for keys (Shaw et al. 2018, the key term a^K of their eq. 4), one
    (2K + 1, E) table per attention layer shared by its heads. Query i attending to key j adds
    q_i . a^K[clip(j - i, -K, K)] / sqrt(E) to the score: an additive float mask for SDPA. The value term a^V
    is not implemented (exported as zeros where a format stores one)."""

    def __init__(self, head_dim: int, max_relative: int) -> None:
        super().__init__()
        if max_relative < 1:
            raise ValueError(f"max_relative must be >= 1, got {max_relative}")
        self.max_relative = max_relative
        self.keys = nn.Parameter(torch.randn(2 * max_relative + 1, head_dim) * head_dim**-0.5)  # (R, E)

    def distances(self, query_len: int, key_len: int, offset: int, device: torch.device) -> Tensor:
        """(T, S) int64 index into the table: clip(j - (offset + i), -K, K) + K.

        Example, K = 2, T = S = 4, offset 0::

            [[2, 3, 4, 4],
             [1, 2, 3, 4],
             [0, 1, 2, 3],
             [0, 0, 1, 2]]
        """
        queries = torch.arange(offset, offset + query_len, device=device)  # (T,)
        keys = torch.arange(key_len, device=device)  # (S,)
        rel = (keys[None, :] - queries[:, None]).clamp(-self.max_relative, self.max_relative)  # (T, S)
        return rel + self.max_relative

    def rotate(self, x: Tensor, offset: int) -> Tensor:
        """Queries and keys pass unchanged (the positions enter through ``bias``)."""
        return x

    def bias(self, q: Tensor, offset: int, key_len: int) -> Tensor:
        """q (B, H, T, E) at positions offset.. -> additive scores (B, H, T, S), already divided by sqrt(E)."""
        b, h, t, e = q.shape
        per_distance = q @ self.keys.to(q.dtype).t() / e**0.5  # (B, H, T, R)
        index = self.distances(t, key_len, offset, q.device)  # (T, S)
        return per_distance.gather(-1, index.expand(b, h, t, key_len))  # (B, H, T, S)


class RotaryPositions(nn.Module):
    """Rotary position embeddings (RoPE, Su et al. 2021) on queries and keys before SDPA, interleaved layout:
    the pair (x[2m], x[2m+1]) of a head is the complex number x[2m] + i x[2m+1], multiplied by
    exp(i p theta_m) at position p, theta_m = base^(-2m/E). Scores then depend on positions only through
    their difference. No parameters; keys are rotated before they enter the cache."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        self.inv_freq: Tensor
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim)  # (E/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotate(self, x: Tensor, offset: int) -> Tensor:
        """x (B, H, T, E) at positions offset..offset+T-1 -> rotated (B, H, T, E)."""
        b, h, t, e = x.shape
        positions = torch.arange(offset, offset + t, device=x.device, dtype=torch.float)  # (T,)
        angles = positions[:, None] * self.inv_freq[None, :]  # (T, E/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        pairs = x.view(b, h, t, e // 2, 2)  # (B, H, T, E/2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]  # (B, H, T, E/2) each
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # (B, H, T, E/2, 2)
        return rotated.view(b, h, t, e)

    def bias(self, q: Tensor, offset: int, key_len: int) -> Tensor | None:
        """No additive scores: the rotation carries the positions."""
        return None


ATTENTION_POSITIONS = ("shaw", "rope")
"""``model.positions`` values that live inside self-attention instead of being added to the embeddings."""
ADDED_POSITIONS = ("sinusoidal", "learned")
"""``model.positions`` values added to the embeddings."""


def build_attention_positions(kind: str, head_dim: int, max_relative: int) -> AttentionPositions | None:
    """The self-attention position component of one layer for ``kind`` (None for added positions)."""
    if kind == "shaw":
        return ShawRelativePositions(head_dim, max_relative)
    if kind == "rope":
        return RotaryPositions(head_dim)
    if kind in ADDED_POSITIONS:
        return None
    raise ValueError(f"unknown positions {kind!r}; choose from {sorted(ADDED_POSITIONS + ATTENTION_POSITIONS)}")
