"""Freshly built Transformer parameters have the statistics each ``model.init`` promises.

fairseq: attention q/k/v Xavier-uniform with gain 1/sqrt(2) per (D, D) matrix, q/k/v biases PyTorch's default,
out_proj Xavier-uniform with a zero bias, feed-forward Linear PyTorch's default (kaiming-uniform a=sqrt(5): bound
1/sqrt(fan_in), bias the same), LayerNorm 1/0. xavier (the earlier init): Xavier-uniform on every matrix, the fused
(2D, D) key/value projection as one, zero biases. Both: embeddings N(0, D^-1/2) with a zero padding row.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from transduce.errors import ConfigError
from transduce.models.transformer import TransformerConfig, build

DIM, FFN, VOCAB, PAD = 64, 256, 3000, 1


def _model(init: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=DIM, heads=4, ffn_dim=FFN, encoder_layers=2, decoder_layers=2, pre_norm=False,
                            init=init)
    return build(cfg, VOCAB, VOCAB, pad_id=PAD)


def _uniform(p: Tensor, bound: float) -> None:
    """Drawn from U(-bound, bound): inside the bounds, reaching near them, std bound/sqrt(3)."""
    assert p.abs().max().item() <= bound + 1e-7
    assert p.abs().max().item() > 0.95 * bound
    assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def _xavier_bound(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    return gain * math.sqrt(6 / (fan_in + fan_out))


def _attentions(model: torch.nn.Module) -> list:
    return [m for name, m in model.named_modules() if name.endswith(("attn", "cross_attn"))]


def _ffn_linears(model: torch.nn.Module) -> list:
    return [m for name, m in model.named_modules() if ".ffn.net." in name and isinstance(m, torch.nn.Linear)]


def _check_shared(model: torch.nn.Module) -> None:
    emb = model.encoder.embed.embedding.weight  # type: ignore[union-attr]
    assert emb is model.decoder.output.weight  # type: ignore[union-attr]
    assert torch.all(emb[PAD] == 0)
    rest = torch.cat([emb[:PAD], emb[PAD + 1:]])
    assert rest.mean().item() == pytest.approx(0, abs=3e-3)
    assert rest.std().item() == pytest.approx(DIM**-0.5, rel=0.02)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 3 * 2  # post-LN: 2 per encoder layer, 3 per decoder layer, no final norm
    for norm in norms:
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_fairseq_init() -> None:
    model = _model("fairseq")
    _check_shared(model)
    attns = _attentions(model)
    assert len(attns) == 2 + 2 * 2
    qkv = _xavier_bound(DIM, DIM, 1 / math.sqrt(2))
    default_bias = 1 / math.sqrt(DIM)
    for attn in attns:
        k, v = attn.kv_proj.weight.chunk(2, dim=0)
        for weight in (attn.q_proj.weight, k, v):
            _uniform(weight, qkv)
        for bias in (attn.q_proj.bias, attn.kv_proj.bias):
            assert bias.abs().max().item() <= default_bias and bias.std().item() > 0.3 * default_bias
        _uniform(attn.out_proj.weight, _xavier_bound(DIM, DIM))
        assert torch.all(attn.out_proj.bias == 0)
    for linear in _ffn_linears(model):
        _uniform(linear.weight, 1 / math.sqrt(linear.in_features))
        assert linear.bias.abs().max().item() <= 1 / math.sqrt(linear.in_features)
        assert linear.bias.std().item() > 0.3 / math.sqrt(linear.in_features)


def test_xavier_init_is_the_earlier_one() -> None:
    model = _model("xavier")
    _check_shared(model)
    for attn in _attentions(model):
        _uniform(attn.q_proj.weight, _xavier_bound(DIM, DIM))
        _uniform(attn.kv_proj.weight, _xavier_bound(DIM, 2 * DIM))  # the fused matrix as one
        _uniform(attn.out_proj.weight, _xavier_bound(DIM, DIM))
    for linear in _ffn_linears(model):
        _uniform(linear.weight, _xavier_bound(linear.in_features, linear.out_features))
    biases = [p for name, p in model.named_parameters() if name.endswith("bias") and "norm" not in name]
    assert biases and all(torch.all(b == 0) for b in biases)


def test_inits_differ_only_in_layers() -> None:
    """Same seed: the embedding table is drawn first and identically; the layers differ."""
    fairseq, xavier = _model("fairseq").state_dict(), _model("xavier").state_dict()
    assert fairseq.keys() == xavier.keys()
    assert torch.equal(fairseq["encoder.embed.embedding.weight"], xavier["encoder.embed.embedding.weight"])
    name = "encoder.layers.0.attn.q_proj.weight"
    assert not torch.equal(fairseq[name], xavier[name])


def test_unknown_init_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^model\.init: unknown initialization 'kaiming' \(known: fairseq, xavier\)"):
        TransformerConfig(init="kaiming")
