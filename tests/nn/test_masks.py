"""Boolean masks: worked examples, shapes, and agreement with an explicit loop."""

import torch

from transduce.nn.masks import attention_mask, causal_mask, padding_mask


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
