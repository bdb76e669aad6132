"""Boolean masks, built in one place. Convention: True means "real / may attend".

Dimension letters: B batch, T query length, S key (source) length.

Worked examples::

    >>> padding_mask(torch.tensor([3, 1]), 4)
    tensor([[ True,  True,  True, False],
            [ True, False, False, False]])
    >>> causal_mask(3)
    tensor([[ True, False, False],
            [ True,  True, False],
            [ True,  True,  True]])

``attention_mask(key_mask, causal=True)`` combines both into shape (B, 1, T, S), which
``F.scaled_dot_product_attention`` broadcasts over heads.
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool, True on real positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def causal_mask(size: int, device: torch.device | None = None) -> Tensor:
    """(T, T) bool lower-triangular: query t may attend to keys 0..t."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def attention_mask(key_mask: Tensor, query_len: int | None = None, causal: bool = False) -> Tensor:
    """Key padding mask (B, S) [+ causal] -> (B, 1, T, S) bool for SDPA.

    Without ``causal`` the result only masks keys, so T is 1 and broadcasts.
    """
    mask = key_mask[:, None, None, :]  # (B, 1, 1, S)
    if causal:
        size = key_mask.size(1) if query_len is None else query_len
        mask = mask & causal_mask(size, key_mask.device)[None, None, :, :]  # (B, 1, T, S)
    return mask


def chunk_mask(size: int, chunk_size: int, left_chunks: int = -1, device: torch.device | None = None) -> Tensor:
    """(T, T) bool mask for chunked streaming attention (WeNet ``subsequent_chunk_mask``).

    Frames are grouped into chunks of ``chunk_size``; query t may attend to every frame of its own
    chunk and of the ``left_chunks`` chunks before it (all earlier chunks when negative)::

        >>> chunk_mask(5, 2)
        tensor([[ True,  True, False, False, False],
                [ True,  True, False, False, False],
                [ True,  True,  True,  True, False],
                [ True,  True,  True,  True, False],
                [ True,  True,  True,  True,  True]])
        >>> chunk_mask(5, 2, left_chunks=1)
        tensor([[ True,  True, False, False, False],
                [ True,  True, False, False, False],
                [ True,  True,  True,  True, False],
                [ True,  True,  True,  True, False],
                [False, False,  True,  True,  True]])
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    chunk = torch.arange(size, device=device) // chunk_size  # (T,) chunk index of each frame
    mask = chunk[None, :] <= chunk[:, None]  # (T, S): key chunk not after query chunk
    if left_chunks >= 0:
        mask &= chunk[None, :] >= chunk[:, None] - left_chunks
    return mask
