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


def chunk_mask(
    size: int, chunk_size: int, left_chunks: int = -1, device: torch.device | None = None, *,
    start: int | Tensor = 0, keys: int | None = None, right_chunks: int = 0,
) -> Tensor:
    """(T, S) bool mask for chunked streaming attention (WeNet ``subsequent_chunk_mask``).

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

    A window of it, without building the rest: the T = ``size`` queries are the absolute frames
    ``start``, ..., ``start + T - 1`` and the S = ``keys`` keys (default T) the S frames ending with the
    last query, i.e. S - T earlier frames then the queries, as a stream sees them. These are rows 2..4
    and columns 1..4 of ``chunk_mask(5, 2, left_chunks=1)`` above::

        >>> chunk_mask(3, 2, left_chunks=1, start=2, keys=4)
        tensor([[ True,  True,  True, False],
                [ True,  True,  True, False],
                [False,  True,  True,  True]])

    With a (B,) tensor ``start`` each row of a batch sits at its own frame -> (B, T, S)::

        >>> chunk_mask(2, 2, start=torch.tensor([0, 2]), keys=3).int()
        tensor([[[1, 1, 1],
                 [1, 1, 1]],
        <BLANKLINE>
                [[1, 1, 1],
                 [1, 1, 1]]], dtype=torch.int32)

    (row 0's first key is frame -1, before its stream began: ``stream_masks`` masks such padding keys).

    ``right_chunks`` > 0 also lets a chunk see that many chunks after it (offline local attention, the band
    that ``nn/local_attention.py`` computes block by block)::

        >>> chunk_mask(5, 2, left_chunks=0, right_chunks=1).int()
        tensor([[1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0],
                [0, 0, 1, 1, 1],
                [0, 0, 1, 1, 1],
                [0, 0, 0, 0, 1]], dtype=torch.int32)
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if right_chunks < 0:
        raise ValueError(f"right_chunks must be >= 0, got {right_chunks}")
    keys = size if keys is None else keys
    if keys < size:
        raise ValueError(f"the keys end with the queries, so keys >= size; got keys={keys}, size={size}")
    first = torch.as_tensor(start, device=device)[..., None]  # (B, 1) or (1,): absolute frame of query 0
    query = (first + torch.arange(size, device=device)) // chunk_size  # ([B,] T) chunk of each query
    key = (first - (keys - size) + torch.arange(keys, device=device)) // chunk_size  # ([B,] S) chunk of each key
    mask = key[..., None, :] <= query[..., :, None] + right_chunks  # ([B,] T, S): key chunk not too far ahead
    if left_chunks >= 0:
        mask &= key[..., None, :] >= query[..., :, None] - left_chunks
    return mask


def stream_mask(frames: int, cached: int, size: int, chunk_size: int, left_chunks: int,
                device: torch.device | None = None) -> Tensor:
    """The rows of ``chunk_mask`` for ``size`` new frames starting at absolute frame ``frames``, against
    ``cached`` earlier frames followed by the new ones -> (T, P + T) bool, T = size, P = cached.
    Costs O(T (P + T)), however long the stream has run::

        >>> torch.equal(stream_mask(6, 4, 2, 2, -1), chunk_mask(8, 2)[6:, 2:])
        True
    """
    return chunk_mask(size, chunk_size, left_chunks, device, start=frames, keys=cached + size)


def stream_masks(frames: Tensor, cached: Tensor, lengths: Tensor, chunk_size: int, left_chunks: int) -> Tensor:
    """``stream_mask`` per row for B streams advancing together in one call -> (B, T, P + T) bool.

    Row b holds ``cached[b]`` frames left-padded to P = max(cached), then ``lengths[b]`` new frames at
    absolute frames ``frames[b]``, ... right-padded to T = max(lengths); padded keys are masked. Every
    row then puts its new frames at the same columns, so relative distances are the same in all rows::

        >>> stream_masks(torch.tensor([0, 4]), torch.tensor([0, 2]), torch.tensor([2, 1]), 2, -1).int()
        tensor([[[0, 0, 1, 1],
                 [0, 0, 1, 1]],
        <BLANKLINE>
                [[1, 1, 1, 0],
                 [1, 1, 1, 0]]], dtype=torch.int32)
    """
    size, past = int(lengths.max()), int(cached.max())
    mask = chunk_mask(size, chunk_size, left_chunks, frames.device, start=frames, keys=past + size)  # (B, T, S)
    column = torch.arange(past + size, device=frames.device)  # (S,)
    real = (column[None, :] >= past - cached[:, None]) & (column[None, :] < past + lengths[:, None])  # (B, S)
    return mask & real[:, None, :]


def attendable(mask: Tensor) -> Tensor:
    """Let rows with no allowed key (only padded queries) see every key, so softmax stays finite::

        >>> attendable(torch.tensor([[True, False], [False, False]]))
        tensor([[ True, False],
                [ True,  True]])
    """
    return mask | ~mask.any(dim=-1, keepdim=True)


def encoder_masks(lengths: Tensor, size: int, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Frame counts (B,) [+ extra bool mask (T, S) or (B, T, S), e.g. ``chunk_mask``] -> attention mask
    (B, 1, T|1, S) and padding mask (B, T). Query rows left with no key see all keys (finite softmax)::

        >>> attn, pad = encoder_masks(torch.tensor([2, 1]), 2)
        >>> attn.shape, pad.tolist()
        (torch.Size([2, 1, 1, 2]), [[True, True], [True, False]])
    """
    pad = padding_mask(lengths, size)  # (B, T)
    attn = attention_mask(pad)  # (B, 1, 1, S)
    if mask is not None:
        extra = mask[None, None] if mask.dim() == 2 else mask[:, None]  # (B|1, 1, T, S)
        attn = attendable(attn & extra)
    elif bool((lengths == 0).any()):
        attn = attendable(attn)
    return attn, pad
