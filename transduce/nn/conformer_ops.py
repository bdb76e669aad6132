"""The Conformer's costly operations in the forms that train fastest on a CPU, each equal to its plain form
(tests/nn/test_conformer_ops.py) up to fp32 rounding.

Dimension letters: B batch, H heads, T query frames, S key frames, R = T + S - 1 relative distances, E head size,
D channels, K kernel size, C channels of a 2-D convolution, F frequency bins.

- ``rel_position_attention``: on CPUs, Transformer-XL attention written out (scores, softmax, values) instead of SDPA
  with a float bias. The bias needs a gradient, so PyTorch's CPU SDPA falls back to its math kernel anyway, and the
  written-out form saves the passes around it (the bias's division and masked copy, SDPA's own scaling and its
  fully-masked-row check): the scale goes into the (B, H, T, E) queries, the position scores are added by
  ``baddbmm``, padding is masked in place.
- ``depthwise_conv``: the depthwise convolution over (B, T, D) as a channels-last 2-D convolution (the layout the
  pointwise layers around it use), instead of transposing to (B, D, T) and back.
- ``residual_dropout``: ``x + scale * dropout(y)`` as one ``addcmul`` after the mask.
- ``channels_last``: a 4-D tensor restrided so that oneDNN convolutions run channels-last, without reorders
  (the subsampling front end: 2.0x faster forward + backward than in NCHW on one AVX-512 thread).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def rel_shift(scores: Tensor) -> Tensor:
    """(B, H, T, R) scores against distances S-1..-(T-1) -> (B, H, T, S) scores against keys.

    Query t sits at absolute frame S - T + t, so key s is at distance S - T + t - s, which is column
    T - 1 - t + s of the input: a strided view (Transformer-XL's shift, as in icefall's zipformer).
    """
    b, h, t, r = scores.shape
    s = r - t + 1
    scores = scores.contiguous()
    sb, sh, _, _ = scores.stride()
    return scores.as_strided((b, h, t, s), (sb, sh, r - 1, 1), scores.storage_offset() + t - 1)


def rel_position_attention(
    q_u: Tensor, q_v: Tensor, keys: Tensor, values: Tensor, pos: Tensor, mask: Tensor | None, *,
    dropout_p: float = 0.0,
) -> Tensor:
    """softmax(((q + u) . k_s + (q + v) . p(t - s)) / sqrt(E)) . v, written out on CPUs (in fp32 also under
    bf16/fp16 autocast, as ``nn.attention.attend`` does), through SDPA with the position scores as its bias on
    other devices (whose fused kernels take a bias with a gradient).

    q_u, q_v (B, H, T, E): the queries plus each positional bias; keys, values (B, H, S, E); pos (H, E, R)
    projected encodings of distances S-1..-(T-1); mask bool (B|1, 1, T|1, S), True = may attend, with at least
    one key per row (``masks.attendable``). ``dropout_p`` drops attention weights. Returns (B, H, T, E).
    """
    if q_u.device.type != "cpu":
        bias = rel_shift(q_v @ pos) / math.sqrt(q_u.size(-1))  # (B, H, T, S)
        bias = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q_u, keys, values, attn_mask=bias, dropout_p=dropout_p)
    low = q_u.dtype in (torch.bfloat16, torch.float16)
    if low or torch.is_autocast_enabled("cpu"):
        dtype = torch.float32 if low else q_u.dtype
        with torch.autocast("cpu", enabled=False):
            out = _written_out(q_u.to(dtype), q_v.to(dtype), keys.to(dtype), values.to(dtype), pos.to(dtype), mask,
                               dropout_p)
        return out.to(q_u.dtype)
    return _written_out(q_u, q_v, keys, values, pos, mask, dropout_p)


def _written_out(q_u: Tensor, q_v: Tensor, keys: Tensor, values: Tensor, pos: Tensor, mask: Tensor | None,
                 dropout_p: float) -> Tensor:
    """``rel_position_attention`` on a CPU: the scale in the queries, position scores added by ``baddbmm``."""
    b, h, t, e = q_u.shape
    s = keys.size(2)
    scale = e**-0.5
    bd = rel_shift((q_v * scale) @ pos)  # (B, H, T, R) -> (B, H, T, S) strided view
    scores = torch.baddbmm(bd.reshape(b * h, t, s), (q_u * scale).reshape(b * h, t, e),
                           keys.reshape(b * h, s, e).transpose(1, 2))  # (B H, T, S)
    if mask is not None:
        scores = _HideBeforeSoftmax.apply(scores, ~mask.expand(b, h, -1, s).reshape(b * h, -1, s))
    weights = scores.view(b, h, t, s).softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ values  # (B, H, T, E)


class _HideBeforeSoftmax(torch.autograd.Function):
    """``scores.masked_fill_(hidden, -inf)`` for scores that go straight into a softmax, whose gradient at the
    hidden entries is then exactly 0 already (their weights are 0): backward passes the gradient through instead
    of copying it to zero those entries again. In place on the (B H, T, S) tensor itself (on a view of it,
    autograd would copy the whole tensor twice)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, scores: Tensor, hidden: Tensor) -> Tensor:
        ctx.mark_dirty(scores)
        return scores.masked_fill_(hidden, float("-inf"))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def residual_dropout(x: Tensor, y: Tensor, p: float, *, scale: float = 1.0, training: bool = True) -> Tensor:
    """``x + scale * F.dropout(y, p, training)`` in one pass after the mask (``addcmul``) instead of four (the mask's
    division, the product, the scaling, the sum). The mask is drawn as ``F.dropout`` draws it (``bernoulli_`` on a
    tensor laid out like ``y``), so the same seed keeps the same masks."""
    if not training or p == 0.0:
        return x + scale * y if scale != 1.0 else x + y
    if p >= 1.0:
        return x + 0.0 * y
    mask = torch.empty_like(y).bernoulli_(1.0 - p)
    return torch.addcmul(x, y, mask, value=scale / (1.0 - p))


def channels_last(x: Tensor) -> Tensor:
    """A copy of (N, C, H, W) with channels-last strides (for convolution weights: small). Unlike
    ``Tensor.contiguous(memory_format=torch.channels_last)`` also when C == 1, where the NCHW strides count as
    channels-last too and are kept (oneDNN then picks its layout from the other operand)."""
    return x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2)


def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """x (B, T, D), weight (D, 1, K) and bias (D,) of a ``Conv1d(D, D, K, groups=D)``, ``padding`` zero frames on
    both sides -> (B, T + 2 padding - K + 1, D): that convolution, run channels-last on (B, D, T, 1)."""
    out = F.conv2d(x.permute(0, 2, 1)[..., None], weight[..., None], bias, padding=(padding, 0),
                   groups=weight.size(0))  # (B, D, T', 1), channels-last
    return out[..., 0].permute(0, 2, 1)  # (B, T', D), contiguous
