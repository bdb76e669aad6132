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
