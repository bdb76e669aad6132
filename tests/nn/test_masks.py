"""Boolean masks: worked examples, shapes, and agreement with an explicit loop."""

import pytest
import torch

from transduce.nn.masks import attention_mask, causal_mask, chunk_mask, padding_mask, stream_mask, stream_masks


def test_padding_mask_docstring_example():
    got = padding_mask(torch.tensor([3, 1]), 4)
    want = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert got.dtype == torch.bool
    assert torch.equal(got, want)


def test_padding_mask_default_length_is_longest():
    lengths = torch.tensor([2, 5, 1])
    got = padding_mask(lengths)
    assert got.shape == (3, 5)
    for b, n in enumerate(lengths.tolist()):
        assert got[b].tolist() == [t < n for t in range(5)]


def test_causal_mask_is_lower_triangular():
    got = causal_mask(4)
    assert got.shape == (4, 4) and got.dtype == torch.bool
    for t in range(4):
        assert got[t].tolist() == [s <= t for s in range(4)]


def test_attention_mask_keys_only_broadcasts_over_queries():
    key_mask = padding_mask(torch.tensor([3, 1]), 4)
    got = attention_mask(key_mask)
    assert got.shape == (2, 1, 1, 4)
    assert torch.equal(got[:, 0, 0], key_mask)


def test_attention_mask_causal_combines_padding_and_triangle():
    lengths = torch.tensor([4, 2, 3])
    key_mask = padding_mask(lengths, 4)
    got = attention_mask(key_mask, causal=True)
    assert got.shape == (3, 1, 4, 4)
    for b, n in enumerate(lengths.tolist()):
        for t in range(4):
            assert got[b, 0, t].tolist() == [s < n and s <= t for s in range(4)]


def test_attention_mask_causal_with_explicit_query_length():
    key_mask = padding_mask(torch.tensor([3, 3]), 3)
    got = attention_mask(key_mask, query_len=3, causal=True)
    assert got.shape == (2, 1, 3, 3)
    assert torch.equal(got[0, 0], causal_mask(3))


def test_docstring_examples_run() -> None:
    import doctest

    import transduce.nn.masks

    result = doctest.testmod(transduce.nn.masks)
    assert result.attempted >= 8 and result.failed == 0


@pytest.mark.parametrize(("chunk", "left"), [(1, -1), (2, -1), (3, 1), (4, 0), (5, 2)])
def test_stream_masks_are_windows_of_the_full_chunk_mask(chunk: int, left: int) -> None:
    """Every streaming mask equals the rows/columns of ``chunk_mask`` over the whole stream that it stands for."""
    full = chunk_mask(40, chunk, left)
    for frames in range(0, 30, chunk):
        for size in range(1, chunk + 1):
            for cached in range(0, frames + 1):
                got = stream_mask(frames, cached, size, chunk, left)
                assert torch.equal(got, full[frames : frames + size, frames - cached : frames + size])
    frames, cached, lengths = torch.tensor([0, 12, 30, 6]), torch.tensor([0, 9, 12, 6]), torch.tensor([chunk] * 4)
    lengths[2] = 1  # a final partial chunk
    rows = stream_masks(frames, cached, lengths, chunk, left)
    past, size = int(cached.max()), chunk
    assert rows.shape == (4, size, past + size)
    for b in range(4):
        f, c, n = int(frames[b]), int(cached[b]), int(lengths[b])
        window = full[f : f + n, f - c : f + n]  # the stream's own queries against its own keys
        assert torch.equal(rows[b, :n, past - c : past + n], window)
        assert not rows[b, :, : past - c].any() and not rows[b, :, past + n :].any()  # padding never attended


def test_chunk_mask_rejects_fewer_keys_than_queries() -> None:
    with pytest.raises(ValueError, match="keys >= size"):
        chunk_mask(4, 2, keys=3)
