"""Blockwise local self-attention with Transformer-XL relative positions, for offline encoding of long inputs.

Frames are grouped in blocks of C; every query of block n attends to the keys of blocks n - L, ..., n + R
(``chunk_mask(T, C, L, right_chunks=R)``, the band a full T x T mask would describe). Here the band is
computed block by block: each block's window of W = (L + 1 + R) C keys is cut out of the padded keys with
``unfold`` (a view), and blocks are processed G at a time, so attention needs O(G C W) memory at once and
O(T W) time in all, never O(T^2). Since every block sees its window at the same offsets, one (C, W) table of
relative distances serves all blocks. A whole encoder runs ``piece`` frames at a time (``in_pieces``), each piece
with the halo of frames its outputs depend on (``LocalWindow.halo``), so its memory follows the piece too.

Dimension letters: B batch, H heads, T frames, E head size, D model size, C block size, N blocks
(ceil(T / C)), G blocks per group, W window keys, P = C + W - 1 relative distances.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from transduce.nn.attention import attend


@dataclass(frozen=True)
class LocalWindow:
    """Blocks of ``block`` frames, each attending to itself, ``left`` blocks before and ``right`` after."""

    block: int
    left: int
    right: int = 0
    group: int = 64
    """Blocks computed together (a memory/speed trade-off; the result does not depend on it)."""
    piece: int = 8192
    """Frames an encoder computes at once (rounded up to whole blocks), each piece with the halo its outputs
    depend on (``in_pieces``); 0 = the whole input. The result does not depend on it."""

    def __post_init__(self) -> None:
        for name, low in (("block", 1), ("left", 0), ("right", 0), ("group", 1), ("piece", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"local attention {name} must be >= {low}, got {getattr(self, name)}")

    @property
    def piece_frames(self) -> int:
        """``piece`` rounded up to whole blocks, so that pieces start on block boundaries."""
        return -(-self.piece // self.block) * self.block

    def halo(self, layers: int, kernel_size: int) -> tuple[int, int]:
        """(left, right) frames that the outputs of ``layers`` blocks (attention in this window, then a
        convolution of ``kernel_size``, causal or centred) can depend on beyond themselves, the left rounded up
        to whole blocks. Per layer a frame sees at most L C + C - 1 frames back and (R + 1) C - 1 ahead through
        attention, K - 1 through the convolution; the reach of a stack is the sum over its layers."""
        c = self.block
        left = layers * (self.left * c + c - 1 + kernel_size - 1)
        right = layers * ((self.right + 1) * c - 1 + kernel_size - 1)
        return -(-left // c) * c, right

    @property
    def keys(self) -> int:
        """W: keys each block sees."""
        return (self.left + 1 + self.right) * self.block

    def distances(self, device: torch.device | None = None) -> Tensor:
        """(P,) the relative distances query - key of a window, largest first: L C + C - 1, ..., -(R + 1) C + 1.
        Query c of a block against window key j is at distance L C + c - j, entry C - 1 - c + j."""
        top = self.left * self.block + self.block - 1
        return torch.arange(top, top - (self.block + self.keys - 1), -1, device=device)

    def index(self, device: torch.device | None = None) -> Tensor:
        """(C, W) int64: where each (query, key) pair of a window reads its distance in ``distances``::

            >>> LocalWindow(block=2, left=1).index()
            tensor([[1, 2, 3, 4],
                    [0, 1, 2, 3]])
        """
        c = torch.arange(self.block, device=device)
        j = torch.arange(self.keys, device=device)
        return self.block - 1 - c[:, None] + j[None, :]


def _windows(x: Tensor, window: LocalWindow, first: int, blocks: int) -> Tensor:
    """Keys or values (B, H, L C + T' + R C, E), padded by L blocks on the left -> the windows of blocks
    ``first`` .. ``first + blocks - 1``: (B, H, G, W, E)."""
    c, w = window.block, window.keys
    part = x[:, :, first * c : (first + blocks - 1) * c + w]  # (B, H, (G - 1) C + W, E)
    return part.unfold(2, w, c).transpose(-1, -2)  # (B, H, G, W, E)


def local_attention(q_u: Tensor, q_v: Tensor, k: Tensor, v: Tensor, p: Tensor, key_mask: Tensor,
                    window: LocalWindow, *, dropout_p: float = 0.0) -> Tensor:
    """Relative-position attention restricted to the band, block by block.

    q_u, q_v: queries plus the content and position biases (B, H, T, E); k, v: (B, H, T, E); p: projected
    encodings of ``window.distances()`` (H, P, E); key_mask: (B, T) True on real frames. Queries see only real
    keys of their window (a query with none sees its whole window, so softmax stays finite).
    Returns (B, H, T, E), equal to full attention under the band mask ANDed with key_mask."""
    b, h, t, e = q_u.shape
    c, left, right = window.block, window.left, window.right
    n = math.ceil(t / c)
    tail = n * c - t
    k, v = (F.pad(y, (0, 0, left * c, right * c + tail)) for y in (k, v))  # (B, H, L C + N C + R C, E)
    q_u, q_v = (F.pad(y, (0, 0, 0, tail)) for y in (q_u, q_v))  # (B, H, N C, E)
    real = F.pad(key_mask, (left * c, right * c + tail))[:, None, :, None]  # (B, 1, L C + N C + R C, 1)
    index = window.index(q_u.device)  # (C, W)
    out = []
    for first in range(0, n, window.group):
        g = min(window.group, n - first)
        rows = slice(first * c, (first + g) * c)
        qu = q_u[:, :, rows].reshape(b, h, g, c, e)  # (B, H, G, C, E)
        qv = q_v[:, :, rows].reshape(b, h, g, c, e)
        by_distance = qv @ p[:, None].transpose(-1, -2)  # (B, H, G, C, P)
        bias = by_distance.gather(-1, index.expand(b, h, g, c, window.keys)) / math.sqrt(e)  # (B, H, G, C, W)
        allowed = _windows(real, window, first, g)[..., 0][:, :, :, None, :]  # (B, 1, G, 1, W)
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
        bias = bias.masked_fill(~allowed, float("-inf"))
        y = attend(qu, _windows(k, window, first, g), _windows(v, window, first, g), attn_mask=bias,
                   dropout_p=dropout_p)
        out.append(y.reshape(b, h, g * c, e))  # (B, H, G C, E)
    return torch.cat(out, dim=2)[:, :, :t]  # (B, H, T, E)


def in_pieces(run: Callable[[int, int], Tensor], total: int, piece: int, halo: tuple[int, int]) -> Tensor:
    """Outputs of frames 0..``total`` - 1, ``piece`` frames at a time: ``run(start, end)`` computes frames
    [start, end) from those frames alone -> (B, end - start, D); each piece [a, b) is run on
    [a - left, b + right) (clipped to the input) and only [a, b) kept, so with the encoder's ``halo`` the
    result equals ``run(0, total)`` while memory follows the piece, not the input. -> (B, total, D)."""
    if piece <= 0 or total <= piece:
        return run(0, total)
    left, right = halo
    out = []
    for a in range(0, total, piece):
        b = min(a + piece, total)
        start, end = max(a - left, 0), min(b + right, total)
        out.append(run(start, end)[:, a - start : b - start])  # (B, b - a, D)
    return torch.cat(out, dim=1)
