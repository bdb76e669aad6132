"""Incremental-decoding state. Each type owns ``reorder(indices)`` so searches never reach in.

Dimension letters: N rows (batch x beams), H heads, T cached steps, S source length, E head size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class KVCache:
    """Keys and values of one attention layer: (N, H, T, E) each."""

    keys: Tensor
    values: Tensor

    def append(self, keys: Tensor, values: Tensor) -> KVCache:
        return KVCache(torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2))

    def reorder(self, indices: Tensor) -> KVCache:
        return KVCache(self.keys.index_select(0, indices), self.values.index_select(0, indices))


@dataclass
class DecoderLayerState:
    """One decoder layer: growing self-attention cache and fixed cross-attention cache."""

    self_attn: KVCache | None
    cross_attn: KVCache | None

    def reorder(self, indices: Tensor) -> DecoderLayerState:
        return DecoderLayerState(
            None if self.self_attn is None else self.self_attn.reorder(indices),
            None if self.cross_attn is None else self.cross_attn.reorder(indices),
        )


@dataclass
class DecoderState:
    """Whole-decoder state: per-layer caches, source mask (N, S) and the number of steps taken."""

    layers: list[DecoderLayerState]
    memory_mask: Tensor
    steps: int = 0

    def reorder(self, indices: Tensor) -> DecoderState:
        return DecoderState(
            [layer.reorder(indices) for layer in self.layers],
            self.memory_mask.index_select(0, indices),
            self.steps,
        )
