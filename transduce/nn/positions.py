"""Position encodings added to embeddings. Both accept an ``offset`` for incremental decoding."""

from __future__ import annotations

import math

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
