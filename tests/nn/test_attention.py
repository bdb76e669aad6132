"""Multi-head attention: the SDPA fast path against ``naive_attention``, padding and causality."""

import pytest
import torch
import torch.nn.functional as F

from transduce.nn.attention import MultiHeadAttention, attend, naive_attention
from transduce.nn.masks import attention_mask, padding_mask

B, T, S, D, H = 3, 5, 6, 16, 4


def _module(seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(D, H).eval()


def test_dim_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)


def test_naive_attention_matches_explicit_softmax_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, H, T, 8), torch.randn(2, H, S, 8), torch.randn(2, H, S, 8)
    mask = attention_mask(padding_mask(torch.tensor([6, 3]), S))
    out, weights = naive_attention(q, k, v, mask)
    for b in range(2):
        n = [6, 3][b]
        scores = torch.einsum("hte,hse->hts", q[b], k[b, :, :n]) / 8**0.5
        want_w = scores.softmax(-1)
        torch.testing.assert_close(weights[b, :, :, :n], want_w)
        torch.testing.assert_close(out[b], want_w @ v[b, :, :n])


def _reference(attn: MultiHeadAttention, query, source, mask):
    """The module's projections around ``naive_attention``, with a mask built by the caller."""

    def split(x):
        return x.view(x.size(0), x.size(1), H, D // H).transpose(1, 2)  # (B, H, T, E)

    k, v = attn.kv_proj(source).chunk(2, dim=-1)
    out, _ = naive_attention(split(attn.q_proj(query)), split(k), split(v), mask)
    return attn.out_proj(out.transpose(1, 2).reshape(query.shape))  # (B, T, D)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_module_equals_naive_reference_with_padding(causal, need_weights):
    attn = _module()
    torch.manual_seed(7)
    query = torch.randn(B, T, D)
    source = query if causal else torch.randn(B, S, D)
    lengths = torch.tensor([T, 3, 1]) if causal else torch.tensor([S, 4, 2])
    key_mask = padding_mask(lengths, source.size(1))
    out, _, _ = attn(
        query, source, mask=attention_mask(key_mask), causal=causal, need_weights=need_weights
    )
    full_mask = attention_mask(key_mask, query_len=T, causal=causal)  # built by nn/masks only
    torch.testing.assert_close(
        out, _reference(attn, query, source, full_mask), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_path_equals_naive_path_with_padding(causal):
    attn = _module()
    torch.manual_seed(1)
    query = torch.randn(B, T, D)
    source = query if causal else torch.randn(B, S, D)
    lengths = torch.tensor([T, 3, 1]) if causal else torch.tensor([S, 4, 2])
    mask = attention_mask(padding_mask(lengths, source.size(1)))  # (B, 1, 1, S)
    fast, _, no_weights = attn(query, source, mask=mask, causal=causal)
    slow, _, weights = attn(query, source, mask=mask, causal=causal, need_weights=True)
    assert no_weights is None
    assert weights is not None and weights.shape == (B, H, T, source.size(1))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_sdpa_causal_without_mask_equals_naive():
    attn = _module()
    torch.manual_seed(2)
    x = torch.randn(B, T, D)
    fast, _, _ = attn(x, x, causal=True)  # is_causal inside SDPA
    slow, _, weights = attn(x, x, causal=True, need_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    future = ~torch.ones(T, T, dtype=torch.bool).tril()
    assert torch.all(weights[..., future] == 0)


def test_padded_keys_get_exactly_zero_weight():
    attn = _module()
    torch.manual_seed(3)
    query, source = torch.randn(B, T, D), torch.randn(B, S, D)
    lengths = torch.tensor([S, 4, 1])
    key_mask = padding_mask(lengths, S)
    _, _, weights = attn(query, source, mask=attention_mask(key_mask), need_weights=True)
    pad = ~key_mask[:, None, None, :].expand_as(weights)
    assert torch.all(weights[pad] == 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))


def test_padded_key_values_do_not_change_output():
    attn = _module()
    torch.manual_seed(4)
    query, source = torch.randn(B, T, D), torch.randn(B, S, D)
    lengths = torch.tensor([S, 4, 2])
    key_mask = padding_mask(lengths, S)
    mask = attention_mask(key_mask)
    garbage = torch.where(key_mask[:, :, None], source, 100 * torch.randn(B, S, D))
    out, _, _ = attn(query, source, mask=mask)
    out_garbage, _, _ = attn(query, garbage, mask=mask)
    torch.testing.assert_close(out, out_garbage, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_padding", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_causal_output_ignores_future_tokens(need_weights, with_padding):
    attn = _module()
    torch.manual_seed(5)
    x = torch.randn(B, T, D)
    # All rows full length: a padding mask that masks nothing still takes the masked code path.
    mask = attention_mask(padding_mask(torch.full((B,), T), T)) if with_padding else None
    out, _, _ = attn(x, x, mask=mask, causal=True, need_weights=need_weights)
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(B, T - t - 1, D)
        out_changed, _, _ = attn(
            changed, changed, mask=mask, causal=True, need_weights=need_weights
        )
        torch.testing.assert_close(out_changed[:, : t + 1], out[:, : t + 1], atol=1e-6, rtol=1e-5)
        assert not torch.allclose(out_changed[:, t + 1 :], out[:, t + 1 :])


def test_cached_self_attention_equals_causal_full_pass():
    attn = _module()
    torch.manual_seed(6)
    x = torch.randn(B, T, D)
    full, _, _ = attn(x, x, causal=True)
    cache, steps = None, []
    for t in range(T):
        y, cache, _ = attn(x[:, t : t + 1], x[:, t : t + 1], cache=cache)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_attend_computes_low_precision_cpu_attention_in_fp32(mask_kind: str) -> None:
    """Under bf16 autocast on a CPU, ``attend`` equals fp32 attention of the same (bf16) inputs, rounded back
    to bf16, and keeps gradients flowing in bf16; fp32 inputs go straight to SDPA."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8).bfloat16().requires_grad_() for _ in range(3))
    masks = {"none": None, "bool": torch.rand(2, 1, 5, 5) > 0.3, "float": torch.randn(2, 3, 5, 5).bfloat16()}
    mask = masks[mask_kind]
    if mask is not None and mask.dtype == torch.bool:
        mask[..., 0] = True  # every query sees a key
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q, k, v, attn_mask=mask)
    reference = F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask.float() if mask_kind == "float" else mask)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference.bfloat16())
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16
    x = torch.randn(2, 3, 5, 8)
    assert torch.equal(attend(x, x, x), F.scaled_dot_product_attention(x, x, x))
