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


def batched(enc: ConformerEncoder, feats: list[torch.Tensor], joins: list[int], chunk: int, left: int,
            gen: torch.Generator) -> list[torch.Tensor]:
    """Streams joining at rounds ``joins``, each fed random pieces, advanced together by ``forward_chunks``
    (one call per round, at most one chunk per stream); returns each stream's encoder output (T', D)."""
    fed = [0] * len(feats)
    states = [enc.init_state(1) for _ in feats]
    outs: list[list[torch.Tensor]] = [[] for _ in feats]
    done = [False] * len(feats)
    rounds = 0
    while not all(done):
        active = [b for b in range(len(feats)) if joins[b] <= rounds and not done[b]]
        pieces = []
        for b in active:
            n = int(torch.randint(0, 30, (1,), generator=gen))
            pieces.append(feats[b][fed[b] : fed[b] + n])
            fed[b] += pieces[-1].size(0)
        closing = [fed[b] >= feats[b].size(0) for b in active]
        out, lens, new = enc.forward_chunks(pieces, [states[b] for b in active], chunk_size=chunk,
                                            left_chunks=left, final=closing)
        assert out.size(0) == len(active) and lens.max() <= chunk
        for i, b in enumerate(active):
            states[b] = new[i]
            outs[b].append(out[i, : int(lens[i])])
            done[b] = closing[i] and int(lens[i]) < chunk
        rounds += 1
    return [torch.cat(o) for o in outs]


@pytest.mark.parametrize(("chunk", "left"), [(4, -1), (3, 1), (2, 0)])
def test_batched_streams_equal_each_stream_alone(chunk: int, left: int) -> None:
    """Five streams of different lengths joining at different rounds, with caches of different lengths in
    the same call (left-padded and masked), give each stream's single-stream output and the full forward."""
    enc = encoder().eval()
    gen = torch.Generator().manual_seed(chunk + 7 * left)
    feats = [torch.randn(n, F_BINS, generator=gen) for n in (150, 61, 97, 123, 40)]
    got = batched(enc, feats, [0, 0, 3, 5, 9], chunk, left, gen)
    for f, g in zip(feats, got, strict=True):
        alone = stream(enc, f[None], [f.size(0)], chunk, left)[0]
        full = enc.encode(f[None], torch.tensor([f.size(0)]), chunk_size=chunk, left_chunks=left)[0][0]
        assert g.shape == alone.shape == full.shape
        torch.testing.assert_close(g, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g, full, atol=1e-5, rtol=1e-5)


def test_batched_rows_without_a_whole_chunk_only_buffer() -> None:
    enc = encoder().eval()
    states = [enc.init_state(1), enc.init_state(1)]
    out, lens, new = enc.forward_chunks([torch.randn(5, F_BINS), torch.randn(40, F_BINS)], states, chunk_size=4)
    assert lens.tolist() == [0, 4] and out.shape == (2, 4, 32) and bool((out[0] == 0).all())
    assert new[0].feats.size(1) == 5 and new[0].frames == 0 and new[1].frames == 4
    assert new[1].layers[0].attn.keys.size(2) == 4 and new[0].layers[0].attn.keys.size(2) == 0
