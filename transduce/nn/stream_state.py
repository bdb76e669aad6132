"""What a streaming Conformer carries between chunks, and the scheduling of many streams' chunks.

``ConformerLayerState`` is one block's cache, ``EncoderStreamState`` a stream's, and ``advance_streams`` the
bookkeeping of ``forward_chunks`` around a chunk step, shared by ``ConformerEncoder`` (PyTorch layers) and the
ONNX runtime (``export/onnx_runtime.py``). Dimension letters as in ``nn/conformer.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from transduce.nn.state import KVCache
from transduce.nn.subsampling import LAYOUTS, conv_lengths


@dataclass
class ConformerLayerState:
    """Streaming cache of one block: attention keys/values (B, H, P, E) and conv inputs (B, D, K - 1)."""

    attn: KVCache
    conv: Tensor

    def reorder(self, indices: Tensor) -> ConformerLayerState:
        return ConformerLayerState(self.attn.reorder(indices), self.conv.index_select(0, indices))


@dataclass
class EncoderStreamState:
    """What a streaming Conformer carries between calls of ``forward_chunk``.

    feats: (B, L, F) normalized feature frames received but not yet consumed by the subsampling;
    layers: per block, attention keys/values (B, H, P, E) of at most ``left_chunks * chunk_size`` earlier
    frames and the causal convolution's last K - 1 inputs (B, D, K - 1); frames: encoder frames emitted.
    """

    feats: Tensor
    layers: list[ConformerLayerState] = field(default_factory=list)
    frames: int = 0

    def reorder(self, indices: Tensor) -> EncoderStreamState:
        return EncoderStreamState(self.feats.index_select(0, indices),
                                  [layer.reorder(indices) for layer in self.layers], self.frames)


ChunkStep = Callable[[list[Tensor], list[EncoderStreamState], list[int], int, int],
                     tuple[Tensor, list[list[ConformerLayerState]]]]
"""Computes one chunk for each of the given streams: (buffered frames (1, L_b, F), states, chunk sizes,
chunk_size, left_chunks) -> (output (B', T', D), each stream's new layer states)."""


def advance_streams(
    step: ChunkStep, feats: Sequence[Tensor], states: Sequence[EncoderStreamState], *, factor: int, dim: int,
    chunk_size: int, left_chunks: int = -1, final: Sequence[bool] | None = None,
) -> tuple[Tensor, Tensor, list[EncoderStreamState]]:
    """The bookkeeping of ``forward_chunks`` around a chunk ``step`` (PyTorch layers, or an exported graph) of
    an encoder that subsamples by ``factor`` to width ``dim``:
    buffer each stream's new frames, decide who has a chunk to compute (a whole one, or the rest when
    ``final``), run ``step`` on those streams together, and return out (B, T', D), lengths (B,), new states."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    closing = list(final) if final is not None else [False] * len(states)
    buffered = [s.feats if f.size(0) == 0 else torch.cat([s.feats, f[None].to(s.feats)], dim=1)
                for f, s in zip(feats, states, strict=True)]  # (1, L_b, F) each
    sizes = []
    for buf, last in zip(buffered, closing, strict=True):
        available = max(int(conv_lengths(buf.size(1), LAYOUTS[factor])), 0)
        sizes.append(chunk_size if available >= chunk_size else available if last else 0)
    rows = [b for b, size in enumerate(sizes) if size > 0]
    new_states = [EncoderStreamState(buf, s.layers, s.frames) for buf, s in zip(buffered, states, strict=True)]
    device = buffered[0].device if buffered else None
    out = torch.zeros(len(states), max(sizes, default=0), dim, device=device)  # (B, T', D)
    if rows:
        x, layers = step([buffered[b] for b in rows], [states[b] for b in rows], [sizes[b] for b in rows],
                         chunk_size, left_chunks)
        for i, b in enumerate(rows):
            out[b, : sizes[b]] = x[i, : sizes[b]]
            new_states[b] = EncoderStreamState(buffered[b][:, sizes[b] * factor :], layers[i],
                                               states[b].frames + sizes[b])
    return out, torch.tensor(sizes, dtype=torch.long), new_states
