"""Blockwise local attention equals full relative-position attention under the equivalent band mask, and its
memory stays bounded by the window, not the length."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from transduce.nn.conformer import ConformerEncoder, RelPositionMultiHeadAttention, sinusoids
from transduce.nn.local_attention import LocalWindow, in_pieces
from transduce.nn.masks import chunk_mask

pytestmark = pytest.mark.usefixtures("one_thread")
F_BINS = 20


def encoder(causal: bool) -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(F_BINS, 32, heads=4, layers=2, ffn_dim=64, kernel_size=5, dropout=0.0,
                            causal=causal, subsampling_channels=8).eval()


def naive_rel_attention(attn: RelPositionMultiHeadAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Transformer-XL scores written out pair by pair (no shift, no SDPA): x (1, T, D), allowed (T, T)."""
    t, d = x.shape[1:]
    h, e = attn.heads, d // attn.heads
    q = attn.q_proj(x)[0].view(t, h, e)
    k, v = (y[0].view(t, h, e) for y in attn.kv_proj(x).chunk(2, dim=-1))
    out = torch.zeros(t, h, e)
    for i in range(t):
        keys = [j for j in range(t) if allowed[i, j]]
        dist = torch.tensor([float(i - j) for j in keys])
        r = attn.pos_proj(sinusoids(dist, d)).view(-1, h, e)  # (S, H, E)
        scores = ((q[i] + attn.pos_bias_u) * k[keys]).sum(-1) + ((q[i] + attn.pos_bias_v) * r).sum(-1)  # (S, H)
        weights = (scores / e**0.5).softmax(dim=0)
        out[i] = (weights[..., None] * v[keys]).sum(0)
    return attn.out_proj(out.reshape(1, t, d))


@pytest.mark.parametrize(("block", "left", "right"), [(4, 1, 0), (3, 2, 1), (5, 0, 2)])
def test_blockwise_attention_equals_pairwise_reference(block: int, left: int, right: int) -> None:
    torch.manual_seed(block)
    attn = RelPositionMultiHeadAttention(32, 4).eval()
    x = torch.randn(1, 23, 32)
    window = LocalWindow(block=block, left=left, right=right, group=2)
    with torch.no_grad():
        local, _ = attn.forward_local(x, sinusoids(window.distances(), 32), torch.ones(1, 23, dtype=torch.bool), window)
        reference = naive_rel_attention(attn, x, chunk_mask(23, block, left, right_chunks=right))
    torch.testing.assert_close(local, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("block", "left", "right", "group"), [(4, 2, 0, 3), (6, 1, 1, 64), (1, 3, 2, 5)])
def test_local_encoder_equals_full_encoder_with_band_mask(causal: bool, block: int, left: int, right: int,
                                                          group: int) -> None:
    enc = encoder(causal)
    feats = torch.randn(2, 230, F_BINS)
    lens = torch.tensor([230, 151])
    window = LocalWindow(block=block, left=left, right=right, group=group)
    with torch.no_grad():
        local, local_lens = enc.encode(feats, lens, window=window)
        t = local.size(1)
        full, _ = enc.encode(feats, lens, chunk_mask(t, block, left, right_chunks=right))
        unrestricted, _ = enc.encode(feats, lens)
    assert local.shape == full.shape and torch.equal(local_lens, torch.tensor([56, 37]))
    torch.testing.assert_close(local, full, atol=1e-5, rtol=1e-5)
    assert (local - unrestricted).abs().max() > 1e-3  # the window matters: the comparison is not vacuous


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("block", "left", "right", "piece"), [(4, 2, 0, 8), (4, 1, 1, 10), (2, 3, 2, 2)])
def test_pieces_with_their_halo_equal_the_whole_input(causal: bool, block: int, left: int, right: int,
                                                      piece: int) -> None:
    enc = encoder(causal)
    feats = torch.randn(2, 330, F_BINS)
    lens = torch.tensor([330, 201])
    with torch.no_grad():
        whole, _ = enc.encode(feats, lens, window=LocalWindow(block=block, left=left, right=right, piece=0))
        pieces, _ = enc.encode(feats, lens, window=LocalWindow(block=block, left=left, right=right, piece=piece))
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=1e-5)


def test_a_halo_short_of_the_reach_changes_the_output() -> None:
    """The halo is needed: pieces with one block of left context, or none on the right, differ from the whole
    input (the test above is not vacuous; random weights make the far edge of the reach weigh ~1e-3)."""
    enc = encoder(False)
    feats, lens = torch.randn(1, 330, F_BINS), torch.tensor([330])
    window = LocalWindow(block=4, left=2, right=1, piece=0)
    left, right = window.halo(len(enc.blocks), enc.kernel_size)
    with torch.no_grad():
        whole, _ = enc.encode(feats, lens, window=window)
        x = enc.subsampling(feats)
        pad = torch.ones(1, x.size(1), dtype=torch.bool)
        pos = sinusoids(window.distances(), 32)

        def run(start: int, end: int) -> torch.Tensor:
            y = enc.dropout(x[:, start:end] * enc.dim**0.5)
            for block in enc.blocks:
                y, _ = block(y, pos, None, pad[:, start:end], window=window)
            return y

        assert torch.allclose(in_pieces(run, x.size(1), 8, (left, right)), whole, atol=1e-5)
        assert not torch.allclose(in_pieces(run, x.size(1), 8, (4, right)), whole, atol=1e-2)
        assert not torch.allclose(in_pieces(run, x.size(1), 8, (left, 0)), whole, atol=1e-2)


def test_window_distances_match_the_full_relative_table() -> None:
    """Query c of a block against window key j is at distance L C + c - j, whatever the block's position."""
    window = LocalWindow(block=3, left=2, right=1)
    distances, index = window.distances(), window.index()
    c, j = torch.meshgrid(torch.arange(3), torch.arange(window.keys), indexing="ij")
    assert torch.equal(distances[index], window.left * window.block + c - j)


def test_bad_window_names_the_field() -> None:
    with pytest.raises(ValueError, match="block must be >= 1"):
        LocalWindow(block=0, left=1)
    with pytest.raises(ValueError, match="right must be >= 0"):
        LocalWindow(block=4, left=1, right=-1)
    with pytest.raises(ValueError, match="replaces the attention mask"):
        encoder(False).encode(torch.randn(1, 50, F_BINS), torch.tensor([50]), chunk_size=4,
                              window=LocalWindow(block=4, left=1))


def _largest_allocation(enc: ConformerEncoder, frames: int, window: LocalWindow | None) -> int:
    feats, lens = torch.randn(1, frames, F_BINS), torch.tensor([frames])
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        enc.encode(feats, lens, window=window)
    return max(event.cpu_memory_usage for event in prof.events())


def test_attention_memory_does_not_grow_with_length_but_full_attention_does() -> None:
    """The largest single allocation: for local attention it is set by the window (and the O(T) activations
    of a 32-wide model), for full attention by the (H, T, T) scores."""
    enc = encoder(False)
    window = LocalWindow(block=8, left=2, right=1, group=4)
    short, long = 1600, 6400  # 400 and 1600 encoder frames
    local_short, local_long = (_largest_allocation(enc, n, window) for n in (short, long))
    full_short, full_long = (_largest_allocation(enc, n, None) for n in (short, long))
    assert full_long >= 12 * full_short  # quadratic: 16x the scores
    assert local_long <= 4.5 * local_short  # at most linear
    assert full_long > 4 * local_long


def test_docstring_examples() -> None:
    import doctest

    import transduce.nn.local_attention

    result = doctest.testmod(transduce.nn.local_attention, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
