"""Multi-head attention through ``F.scaled_dot_product_attention`` (``attend``).

Dimension letters: B batch (or batch x beams), T query length, S key length, D model size,
H heads, E head size (D = H * E). Masks are boolean, True = may attend (see ``nn/masks.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transduce.nn.positions import AttentionPositions
from transduce.nn.state import KVCache


def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Reference attention: (B, H, T, E) x (B, H, S, E) -> output (B, H, T, E), weights (B, H, T, S).
    ``mask`` is bool (True = may attend) or float (added to the scaled scores), as SDPA's ``attn_mask``."""
    scores = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5  # (B, H, T, S)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def attend(q: Tensor, k: Tensor, v: Tensor, *, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
           is_causal: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention``, computed in fp32 on a CPU when the inputs are bf16 or fp16 (under
    autocast): PyTorch's CPU attention kernels are far slower in bf16 than in fp32 (forward + backward, one
    thread, 8 x 4 heads x 32 x 32 on an AVX512-BF16 EPYC: 6x unmasked, 20x with a boolean mask), while the
    projections around them gain from bf16. The output has the inputs' dtype. Elsewhere (CUDA, fp32) it is SDPA."""
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.float()
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                             dropout_p=dropout_p, is_causal=is_causal)
    return out.to(q.dtype)


def scores_mask(mask: Tensor | None, bias: Tensor, causal: bool) -> Tensor:
    """Bool ``mask`` (True = may attend, broadcastable to (B, H, T, S)) and float ``bias`` (B, H, T, S) -> one
    float mask for SDPA: the bias where attending is allowed, -inf elsewhere. ``causal``: also hide key j > i
    (the teacher-forced pass, T == S)."""
    t, s = bias.shape[-2:]
    if causal:
        tri = torch.ones(t, s, dtype=torch.bool, device=bias.device).tril()  # (T, S)
        mask = tri if mask is None else mask & tri
    return bias if mask is None else bias.masked_fill(~mask, float("-inf"))


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with an optional key/value cache for incremental decoding. ``positions``
    (self-attention only) rotates queries and new keys (RoPE) or adds relative scores (Shaw) before SDPA."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0,
                 positions: AttentionPositions | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.positions = positions
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape  # under tensor parallelism x holds this rank's heads only: H counted from the size
        return x.view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, H, T, E)

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
        offset = 0 if cache is None or static_kv else cache.keys.size(2)  # steps already cached
        if static_kv and cache is not None:
            kv = cache
        else:
            assert source is not None
            kv = self.project_kv(source)
            if self.positions is not None:
                kv = KVCache(self.positions.rotate(kv.keys, offset), kv.values)  # cached rotated
            if cache is not None:
                kv = cache.append(kv.keys, kv.values)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if self.positions is not None:
            q = self.positions.rotate(q, offset)
            bias = self.positions.bias(q, offset, kv.keys.size(2))  # (B, H, T, S) or None
            if bias is not None:
                mask, causal = scores_mask(mask, bias, causal), False
        if causal and (mask is not None or need_weights):
            tri = torch.ones(q.size(2), kv.keys.size(2), dtype=torch.bool, device=q.device).tril()
            mask = tri if mask is None else mask & tri
            causal = False
        if need_weights:
            out, weights = naive_attention(q, kv.keys, kv.values, mask)
        else:
            out = attend(q, kv.keys, kv.values, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        b, h, t, e = out.shape
        out = out.transpose(1, 2).reshape(b, t, h * e)  # (B, T, D)
        return self.out_proj(out), kv, weights
