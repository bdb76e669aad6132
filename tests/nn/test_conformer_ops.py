"""The fast forms of the Conformer's operations (``nn/conformer_ops.py``, and the modules that use them) against
their plain forms, run in the test: values and gradients in float64, and the memory layout that decides which
dropout mask training draws."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transduce.nn.conformer import ConformerBlock, ConvolutionModule, RelPositionMultiHeadAttention, relative_positions
from transduce.nn.conformer_ops import (
    channels_last,
    depthwise_conv,
    rel_position_attention,
    rel_shift,
    residual_dropout,
)
from transduce.nn.masks import attendable, chunk_mask, padding_mask
from transduce.nn.subsampling import Conv2dSubsampling

pytestmark = pytest.mark.usefixtures("one_thread")


def sdpa_rel_attention(q_u, q_v, keys, values, pos, mask):
    """The former form: the position scores as a float bias of SDPA, masked entries -inf."""
    bias = rel_shift(q_v @ pos) / math.sqrt(q_u.size(-1))
    if mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q_u, keys, values, attn_mask=bias)


def grads(out, inputs, seed=0):
    """Gradients of a random projection of ``out`` with respect to ``inputs``."""
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * weight).sum(), inputs)


@pytest.mark.parametrize("t,past,masked", [(7, 0, "none"), (7, 0, "padding"), (6, 5, "chunks"), (1, 9, "padding")])
def test_rel_position_attention_equals_sdpa_with_bias(t, past, masked):
    torch.manual_seed(0)
    b, h, e, s = 3, 2, 4, t + past
    q_u, q_v, keys, values = (torch.randn(b, h, n, e, dtype=torch.float64, requires_grad=True)
                              for n in (t, t, s, s))
    pos = torch.randn(h, e, t + s - 1, dtype=torch.float64, requires_grad=True)
    mask = None
    if masked == "padding":
        mask = padding_mask(torch.tensor([s, s - 1, 1]), s)[:, None, None]  # (B, 1, 1, S)
    elif masked == "chunks":
        mask = attendable(chunk_mask(t, 2, 1, start=past, keys=s)[None, None]
                          & padding_mask(torch.tensor([s, 4, 2]), s)[:, None, None])  # (B, 1, T, S)
    got = rel_position_attention(q_u, q_v, keys, values, pos, mask)
    want = sdpa_rel_attention(q_u, q_v, keys, values, pos, mask)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    inputs = (q_u, q_v, keys, values, pos)
    for g, w in zip(grads(got, inputs), grads(want, inputs), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def rel_inputs(dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(0)
    q_u, q_v, keys, values = (torch.randn(2, 2, 5, 4, generator=g, dtype=dtype).to(device) for _ in range(4))
    pos = torch.randn(2, 4, 9, generator=g, dtype=dtype).to(device)
    mask = padding_mask(torch.tensor([5, 3]), 5)[:, None, None].to(device)
    return q_u, q_v, keys, values, pos, mask


def test_rel_position_attention_runs_in_fp32_under_cpu_autocast():
    inputs = rel_inputs()
    want = sdpa_rel_attention(*inputs)
    low = [x.bfloat16() if x.is_floating_point() else x for x in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rel_position_attention(*inputs)  # fp32 inputs: autocast would run the products in bf16
        got_low = rel_position_attention(*low)
    assert got.dtype == torch.float32 and got_low.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # fp32 accuracy, not bf16's
    want_low = sdpa_rel_attention(*[x.float() if x.is_floating_point() else x for x in low])
    torch.testing.assert_close(got_low, want_low.bfloat16())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rel_position_attention_on_cuda_is_sdpa_with_a_bias():
    inputs = rel_inputs(torch.float64)
    want = sdpa_rel_attention(*inputs)
    got = rel_position_attention(*rel_inputs(torch.float64, "cuda"))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)


def test_rel_position_attention_drops_weights():
    q, k = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    pos = torch.randn(2, 4, 5)
    assert rel_position_attention(q, q, k, k, pos, None, dropout_p=1.0).abs().max() == 0
    torch.manual_seed(0)
    half = rel_position_attention(q, q, k, k, pos, None, dropout_p=0.5)
    assert not torch.equal(half, rel_position_attention(q, q, k, k, pos, None))


@pytest.mark.parametrize("scale,p", [(0.5, 0.1), (1.0, 0.3), (0.5, 0.0)])
def test_residual_dropout_draws_dropouts_masks(scale, p):
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 5, 7, dtype=torch.float64).transpose(1, 2).requires_grad_()  # a (B, D, T) layout, as conv's
    torch.manual_seed(0)
    got = residual_dropout(x, y, p, scale=scale)
    torch.manual_seed(0)
    want = x + scale * F.dropout(y, p)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(grads(got, (x, y)), grads(want, (x, y)), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert torch.equal(residual_dropout(x, y, p, scale=scale, training=False), x + scale * y)
    assert torch.equal(residual_dropout(x, y, 1.0, scale=scale), x)


@pytest.mark.parametrize("padding", [0, 2])
def test_depthwise_conv_equals_grouped_conv1d(padding):
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 6, 5, groups=6, padding=padding).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)  # (B, T, D)
    got = depthwise_conv(x, conv.weight, conv.bias, padding)
    want = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    inputs = (x, conv.weight, conv.bias)
    for g, w in zip(grads(got, inputs), grads(want, inputs), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_channels_last_restrides_single_channel_tensors():
    x = torch.randn(2, 1, 5, 3)
    assert x.contiguous(memory_format=torch.channels_last).stride() == x.stride()  # why the helper exists
    y = channels_last(x)
    assert torch.equal(y, x) and y.stride() == (15, 1, 3, 1)
    z = torch.randn(2, 4, 5, 3)
    assert channels_last(z).is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last(z), z)


def conv_module_reference(m: ConvolutionModule, x, pad_mask=None, cache=None):
    """The former (B, D, T) form of ``ConvolutionModule.forward``: Conv1d layers on transposed input."""
    h = F.glu(m.pointwise_in(x.transpose(1, 2)), dim=1)  # (B, D, T)
    if pad_mask is not None:
        h = h.masked_fill(~pad_mask[:, None, :], 0.0)
    h = torch.cat([cache, h], dim=2) if cache is not None else F.pad(h, (m.left, m.right))
    new_cache = h[:, :, h.size(2) - m.left :] if m.causal else h[:, :, :0]
    h = m.depthwise(h)
    h = m.norm(h.transpose(1, 2)).transpose(1, 2) if isinstance(m.norm, nn.LayerNorm) else m.norm(h)
    return m.pointwise_out(F.silu(h)).transpose(1, 2), new_cache


@pytest.mark.parametrize("causal,norm,cached", [(False, "layer", False), (True, "layer", False),
                                                (True, "layer", True), (False, "batch", False)])
def test_convolution_module_equals_conv1d_form(causal, norm, cached):
    torch.manual_seed(0)
    m = ConvolutionModule(6, 5, causal=causal, norm=norm).double().train()
    x = torch.randn(3, 8, 6, dtype=torch.float64, requires_grad=True)
    pad = padding_mask(torch.tensor([8, 5, 1]), 8)
    cache = torch.randn(3, 6, 4, dtype=torch.float64) if cached else None
    got, got_cache = m(x, pad, cache)
    want, want_cache = conv_module_reference(m, x, pad, cache)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_cache, want_cache, rtol=1e-12, atol=1e-12)
    assert got.stride() == want.stride()  # same layout: a dropout after it draws the same mask
    inputs = (x, *m.parameters())
    for g, w in zip(grads(got, inputs), grads(want, inputs), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("factor,channels", [(4, 0), (4, 3), (6, 4), (8, 2)])
def test_subsampling_equals_nchw_form(factor, channels):
    torch.manual_seed(0)
    sub = Conv2dSubsampling(16, 8, factor, channels=channels).double()
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    got = sub(x)
    h = sub.conv(x[:, None])  # (B, C, T', F'): the former form
    want = sub.out(h.transpose(1, 2).reshape(h.size(0), h.size(2), -1))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    params = tuple(sub.parameters())
    for g, w in zip(grads(got, params), grads(want, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def former_attention(self, x, pos, mask, cache=None):
    """The former ``RelPositionMultiHeadAttention.forward`` (no cache), through SDPA with a bias."""
    q = self._split(self.q_proj(x))
    k, v = (self._split(y) for y in self.kv_proj(x).chunk(2, dim=-1))
    p = self.pos_proj(pos).view(pos.size(0), self.heads, -1).permute(1, 2, 0)
    out = sdpa_rel_attention(q + self.pos_bias_u[:, None], q + self.pos_bias_v[:, None], k, v, p, mask)
    return self.out_proj(out.transpose(1, 2).reshape(x.shape)), None


def test_block_in_training_draws_the_former_dropout_masks(monkeypatch):
    """A Conformer block in training mode, same seed: the fast forms give what the former forms give, because
    every tensor a dropout sees has its former layout."""
    torch.manual_seed(0)
    block = ConformerBlock(8, 2, 16, 5, dropout=0.3).double().train()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    pad = padding_mask(torch.tensor([6, 4]), 6)
    pos = relative_positions(6, 6, 8).double()
    torch.manual_seed(1)
    got, _ = block(x, pos, pad[:, None, None], pad)
    monkeypatch.setattr(RelPositionMultiHeadAttention, "forward", former_attention)
    monkeypatch.setattr(ConvolutionModule, "forward", conv_module_reference)
    torch.manual_seed(1)
    want, _ = block(x, pos, pad[:, None, None], pad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
