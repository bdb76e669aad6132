"""Subsampling arithmetic, chunk masks, relative attention vs a naive reference, convolution
causality, and padding invariance of the Conformer / Transformer speech encoders."""

import math

import pytest
import torch

from transduce.nn.conformer import (
    ConformerEncoder,
    ConvolutionModule,
    RelPositionMultiHeadAttention,
    TransformerSpeechEncoder,
    rel_shift,
    relative_positions,
    sinusoids,
)
from transduce.nn.masks import causal_mask, chunk_mask, padding_mask
from transduce.nn.subsampling import Conv2dSubsampling


def test_chunk_mask_matches_wenet_loop():
    for size, chunk, left in [(5, 2, -1), (5, 2, 1), (9, 3, 0), (7, 1, 2), (4, 8, -1)]:
        want = torch.zeros(size, size, dtype=torch.bool)
        for i in range(size):  # WeNet subsequent_chunk_mask
            start = 0 if left < 0 else max((i // chunk - left) * chunk, 0)
            want[i, start : min((i // chunk + 1) * chunk, size)] = True
        assert torch.equal(chunk_mask(size, chunk, left), want)


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_output_lengths_match_actual_sizes(factor):
    sub = Conv2dSubsampling(20, 8, factor)
    assert sub.output_lengths(torch.tensor([sub.min_frames - 1])).item() == 0
    for t in range(sub.min_frames, 80):
        out = sub(torch.randn(1, t, 20))
        assert out.shape == (1, sub.output_lengths(torch.tensor([t])).item(), 8)
    assert sub(torch.randn(1, sub.min_frames, 20)).size(1) == 1
    with pytest.raises(ValueError):
        sub(torch.randn(1, sub.min_frames - 1, 20))


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_receptive_field(factor):
    sub = Conv2dSubsampling(16, 4, factor)
    assert sub.receptive_field == {4: 7, 6: 11, 8: 15}[factor]
    x = torch.randn(1, 60, 16)
    base = sub(x)
    for t in range(base.size(1)):
        after, inside = x.clone(), x.clone()
        after[:, t * factor + sub.receptive_field :] += 5.0  # beyond output t's window
        inside[:, t * factor + sub.receptive_field - 1] += 5.0  # last frame of the window
        assert torch.equal(sub(after)[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(sub(inside)[:, t], base[:, t])


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_padding_does_not_change_valid_outputs(factor):
    torch.manual_seed(0)
    sub = Conv2dSubsampling(16, 8, factor)
    lengths = torch.tensor([50, 23, sub.min_frames, 37])
    feats = torch.randn(4, 50, 16) * 3  # garbage beyond each length
    out = sub(feats)
    out_lens = sub.output_lengths(lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = sub(feats[b : b + 1, :n])
        assert alone.size(1) == out_lens[b]
        torch.testing.assert_close(out[b : b + 1, : out_lens[b]], alone, atol=1e-5, rtol=0)


def test_rel_shift_indexes_relative_distances():
    t, s = 3, 5
    dist = torch.arange(s - 1, -t, -1)  # (R,) the distance each column stands for
    scores = dist.float().expand(2, 1, t, -1)  # (B, H, T, R): each score is its distance
    want = (s - t + torch.arange(t))[:, None] - torch.arange(s)[None, :]  # (T, S) query - key
    assert torch.equal(rel_shift(scores)[0, 0], want.float())
    assert torch.equal(relative_positions(t, s, 6), sinusoids(dist, 6))


def naive_rel_attention(attn, x, past, mask):
    """Score every (query, key) pair from its own distance, no shifting: x (B, T, D) queries,
    past (B, P, D) earlier frames, mask (B, T, S) -> (B, T, D)."""
    xs = torch.cat([past, x], dim=1)  # (B, S, D)
    b, t, d = x.shape
    s, h = xs.size(1), attn.heads
    e = d // h
    q = attn.q_proj(x).view(b, t, h, e)
    k, v = (y.view(b, s, h, e) for y in attn.kv_proj(xs).chunk(2, dim=-1))
    dist = (s - t + torch.arange(t))[:, None] - torch.arange(s)[None, :]  # (T, S)
    r = attn.pos_proj(sinusoids(dist.flatten(), d)).view(t, s, h, e)
    ac = torch.einsum("bthe,bshe->bhts", q + attn.pos_bias_u, k)
    bd = torch.einsum("bthe,tshe->bhts", q + attn.pos_bias_v, r)
    scores = ((ac + bd) / math.sqrt(e)).masked_fill(~mask[:, None], float("-inf"))
    out = torch.einsum("bhts,bshe->bthe", scores.softmax(-1), v).reshape(b, t, d)
    return attn.out_proj(out)


@pytest.mark.parametrize("past_len", [0, 4])
def test_rel_attention_sdpa_matches_naive(past_len):
    torch.manual_seed(1)
    attn = RelPositionMultiHeadAttention(16, 4).eval()
    x, past = torch.randn(3, 6, 16), torch.randn(3, past_len, 16)
    s = past_len + 6
    mask = torch.rand(3, 6, s) > 0.4
    mask[:, :, -1] = True  # every query keeps a key
    cache = attn(past, relative_positions(past_len, past_len, 16), None)[1] if past_len else None
    got, kv = attn(x, relative_positions(6, s, 16), mask, cache)
    torch.testing.assert_close(got, naive_rel_attention(attn, x, past, mask), atol=1e-5, rtol=1e-5)
    assert kv.keys.shape == (3, 4, s, 4)


def test_rel_attention_with_cache_equals_full_causal():
    torch.manual_seed(2)
    attn = RelPositionMultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 10, 16)
    full, _ = attn(x, relative_positions(10, 10, 16), causal_mask(10)[None])
    _, cache = attn(x[:, :7], relative_positions(7, 7, 16), causal_mask(7)[None])
    tail, _ = attn(x[:, 7:], relative_positions(3, 10, 16), causal_mask(10)[None, 7:], cache)
    torch.testing.assert_close(tail, full[:, 7:], atol=1e-5, rtol=1e-5)


def test_causal_conv_ignores_the_future_and_streams_with_cache():
    torch.manual_seed(3)
    conv = ConvolutionModule(8, 5, causal=True).eval()
    x = torch.randn(2, 12, 8)
    base, _ = conv(x)
    for t in range(12):
        y = x.clone()
        y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
        torch.testing.assert_close(conv(y)[0][:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
    first, cache = conv(x[:, :5])
    second, _ = conv(x[:, 5:], cache=cache)
    torch.testing.assert_close(torch.cat([first, second], 1), base, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        ConvolutionModule(8, 5)(x, cache=cache)


def encoders():
    torch.manual_seed(4)
    return [
        ConformerEncoder(20, 32, heads=4, layers=2, ffn_dim=64, kernel_size=7).eval(),
        ConformerEncoder(20, 32, heads=4, layers=2, ffn_dim=64, kernel_size=7, subsampling=6, causal=True).eval(),
        TransformerSpeechEncoder(20, 32, heads=4, layers=2, ffn_dim=64, subsampling=8).eval(),
    ]


@pytest.mark.parametrize("encoder", encoders(), ids=["conformer", "causal6", "transformer8"])
def test_padded_batch_equals_each_utterance_alone(encoder):
    lengths = torch.tensor([61, 40, 17, 55])
    feats = torch.randn(4, 61, 20)
    feats = feats.masked_fill(~padding_mask(lengths, 61)[..., None], 0.0)
    with torch.no_grad():
        out, out_lens = encoder.encode(feats, lengths)
        noisy = feats + 100 * torch.randn_like(feats) * ~padding_mask(lengths, 61)[..., None]
        out_noisy, _ = encoder.encode(noisy, lengths)  # padded frames perturbed
        for b, n in enumerate(lengths.tolist()):
            alone, alone_lens = encoder.encode(feats[b : b + 1, :n], lengths[b : b + 1])
            assert alone_lens.item() == out_lens[b] == alone.size(1)
            torch.testing.assert_close(out[b, : out_lens[b]], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_noisy, out, atol=1e-5, rtol=1e-5)
    assert not out[1, out_lens[1] :].any()  # padded outputs are zero


def test_causal_encoder_with_causal_mask_ignores_future_frames():
    """Causal conv + a causal (= chunk size 1) mask: output t' depends on input frames < t' * 4 + 7 only."""
    enc = ConformerEncoder(20, 32, heads=4, layers=2, ffn_dim=64, kernel_size=7, causal=True).eval()
    feats, lens = torch.randn(1, 41, 20), torch.tensor([41])
    with torch.no_grad():
        base, _ = enc.encode(feats, lens, mask=causal_mask(9))
        for t in range(base.size(1)):
            y = feats.clone()
            y[:, t * 4 + enc.subsampling.receptive_field :] += 3.0
            out, _ = enc.encode(y, lens, mask=chunk_mask(9, 1))
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=1e-5)
