"""Chunk-by-chunk Conformer encoding equals the full forward with the equivalent chunk mask."""

import pytest
import torch

from transduce.nn.conformer import ConformerEncoder

F_BINS = 20


def encoder(subsampling: int = 4, dropout: float = 0.0) -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(F_BINS, 32, heads=4, layers=3, ffn_dim=64, kernel_size=5, subsampling=subsampling,
                            dropout=dropout, causal=True, subsampling_channels=8)


def stream(enc: ConformerEncoder, feats: torch.Tensor, pieces: list[int], chunk: int, left: int) -> torch.Tensor:
    state = enc.init_state(feats.size(0))
    outs, start = [], 0
    for n in pieces:
        y, state = enc.forward_chunk(feats[:, start : start + n], state, chunk_size=chunk, left_chunks=left)
        assert y.size(1) % chunk == 0  # only whole chunks before the end
        outs.append(y)
        start += n
    y, state = enc.forward_chunk(feats[:, start:], state, chunk_size=chunk, left_chunks=left, final=True)
    outs.append(y)
    return torch.cat(outs, dim=1)


def random_pieces(total: int, gen: torch.Generator) -> list[int]:
    pieces = []
    while sum(pieces) < total:
        pieces.append(int(torch.randint(0, 23, (1,), generator=gen)))
    return pieces[:-1]


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize(("chunk", "left"), [(1, -1), (2, 1), (4, -1), (4, 0), (3, 2), (16, 1)])
def test_chunked_forward_equals_full_forward_with_chunk_mask(chunk: int, left: int, train_mode: bool) -> None:
    enc = encoder().train(train_mode)
    gen = torch.Generator().manual_seed(chunk * 10 + left)
    feats = torch.randn(2, 150, F_BINS, generator=gen)
    full, lens = enc.encode(feats, torch.tensor([150, 150]), chunk_size=chunk, left_chunks=left)
    chunked = stream(enc, feats, random_pieces(150, gen), chunk, left)
    assert chunked.shape == full.shape == (2, int(lens[0]), 32)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)


def test_chunk_mask_changes_the_output_and_full_context_differs_from_chunks() -> None:
    """The comparison above is not vacuous: chunking changes what the encoder computes."""
    enc = encoder().eval()
    feats = torch.randn(1, 120, F_BINS)
    lens = torch.tensor([120])
    full = enc.encode(feats, lens)[0]
    chunked = enc.encode(feats, lens, chunk_size=4)[0]
    assert (full - chunked).abs().max() > 1e-3
    assert not torch.allclose(enc.encode(feats, lens, chunk_size=4, left_chunks=0)[0], chunked)


@pytest.mark.parametrize("subsampling", [6, 8])
def test_streaming_front_end_carries_frames_for_every_subsampling(subsampling: int) -> None:
    enc = encoder(subsampling).eval()
    feats = torch.randn(1, 200, F_BINS)
    full = enc.encode(feats, torch.tensor([200]), chunk_size=3, left_chunks=1)[0]
    one_frame_at_a_time = stream(enc, feats, [1] * 199, 3, 1)
    torch.testing.assert_close(one_frame_at_a_time, full, atol=1e-5, rtol=1e-5)


def test_attention_cache_is_bounded_by_the_left_context() -> None:
    enc = encoder().eval()
    state = enc.init_state(1)
    for _ in range(20):
        _, state = enc.forward_chunk(torch.randn(1, 64, F_BINS), state, chunk_size=4, left_chunks=2)
    total = int(enc.subsampling.output_lengths(torch.tensor(20 * 64)))  # 319 encoder frames
    assert state.frames == total - total % 4  # whole chunks only; the rest waits for more audio
    assert all(layer.attn.keys.size(2) == 8 for layer in state.layers)
    assert state.feats.size(1) < 4 * enc.subsampling.factor + enc.subsampling.receptive_field  # < one chunk waits


def test_streaming_needs_a_causal_convolution() -> None:
    enc = ConformerEncoder(F_BINS, 32, heads=4, layers=1, ffn_dim=64, kernel_size=5)
    with pytest.raises(ValueError, match="causal"):
        enc.init_state(1)
