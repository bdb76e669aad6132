"""Residual wiring of the Transformer layers: pre-LN and post-LN, written out by hand."""

import pytest
import torch

from transduce.nn.transformer import EncoderLayer, Residual


@pytest.mark.parametrize("pre_norm", [True, False])
def test_residual_matches_its_formula(pre_norm):
    torch.manual_seed(0)
    res = Residual(8, dropout=0.0, pre_norm=pre_norm)
    with torch.no_grad():
        res.norm.weight.uniform_(0.5, 1.5)
        res.norm.bias.uniform_(-0.5, 0.5)
    f = torch.nn.Linear(8, 8)
    x = torch.randn(2, 3, 8)
    got = res.after(x, f(res.before(x)))
    if pre_norm:
        want = x + f(res.norm(x))
    else:
        want = res.norm(x + f(x))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_encoder_layer_matches_its_formula(pre_norm):
    torch.manual_seed(1)
    layer = EncoderLayer(8, 2, 16, dropout=0.0, pre_norm=pre_norm).eval()
    x = torch.randn(2, 3, 8)
    mask = torch.ones(2, 1, 1, 3, dtype=torch.bool)
    a, f = layer.attn, layer.ffn
    n1, n2 = layer.attn_res.norm, layer.ffn_res.norm
    if pre_norm:
        h = x + a(n1(x), n1(x), mask=mask)[0]
        want = h + f(n2(h))
    else:
        h = n1(x + a(x, x, mask=mask)[0])
        want = n2(h + f(h))
    torch.testing.assert_close(layer(x, mask), want)
