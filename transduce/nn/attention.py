"""Multi-head attention through ``F.scaled_dot_product_attention``.

Dimension letters: B batch (or batch x beams), T query length, S key length, D model size,
H heads, E head size (D = H * E). Masks are boolean, True = may attend (see ``nn/masks.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transduce.nn.state import KVCache


def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Reference attention: (B, H, T, E) x (B, H, S, E) -> output (B, H, T, E), weights (B, H, T, S)."""
    scores = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with an optional key/value cache for incremental decoding."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, E)

    def project_kv(self, source: Tensor) -> KVCache:
        """(B, S, D) -> cache of keys and values, each (B, H, S, E)."""
        k, v = self.kv_proj(source).chunk(2, dim=-1)
        return KVCache(self._split(k), self._split(v))

    def forward(
        self,
        query: Tensor,
        source: Tensor | None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        static_kv: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, KVCache | None, Tensor | None]:
        """Attend from ``query`` (B, T, D) to ``source`` (B, S, D).

        ``mask``: bool, broadcastable to (B, H, T, S). ``causal``: lower-triangular mask
        (training only). With ``static_kv`` the cache holds the projected source (cross-attention)
        and ``source`` may be None; otherwise new keys/values are appended to ``cache``.
        Returns (output (B, T, D), updated cache or None, weights (B, H, T, S) if asked).
        """
        q = self._split(self.q_proj(query))  # (B, H, T, E)
        if static_kv and cache is not None:
            kv = cache
        else:
            assert source is not None
            kv = self.project_kv(source)
            if cache is not None:
                kv = cache.append(kv.keys, kv.values)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if causal and (mask is not None or need_weights):
            tri = torch.ones(q.size(2), kv.keys.size(2), dtype=torch.bool, device=q.device).tril()
            mask = tri if mask is None else mask & tri
            causal = False
        if need_weights:
            out, weights = naive_attention(q, kv.keys, kv.values, mask)
        else:
            out = F.scaled_dot_product_attention(
                q, kv.keys, kv.values, attn_mask=mask, dropout_p=dropout, is_causal=causal
            )
        b, h, t, e = out.shape
        out = out.transpose(1, 2).reshape(b, t, h * e)  # (B, T, D)
        return self.out_proj(out), kv, weights
