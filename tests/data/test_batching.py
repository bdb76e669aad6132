"""Token-budget batching: budget, coverage, determinism, worker-independence, masks."""

import numpy as np
import pytest
import torch

from transduce.data.batching import collate, iterate_batches, make_batches, pad
from transduce.data.tokenizer import BOS, EOS, PAD

MAX_TOKENS = 64


def _corpus(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, 50, rng.integers(1, 20)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, 50, rng.integers(1, 20)).tolist() for _ in range(n)]
    src.append(list(range(4, 4 + 90)))  # longer than the whole budget on its own
    tgt.append([5, 6])
    return src, tgt


def _batches(src, tgt, *, seed=1, epoch=0, **kwargs):
    return make_batches(
        [len(s) for s in src],
        [len(t) for t in tgt],
        max_tokens=MAX_TOKENS,
        seed=seed,
        epoch=epoch,
        **kwargs,
    )


@pytest.mark.parametrize("shuffle", [True, False])
def test_padded_size_stays_within_budget(shuffle):
    src, tgt = _corpus()
    oversize = 0
    for indices in _batches(src, tgt, shuffle=shuffle):
        batch = collate(indices, src, tgt)
        width = max(batch.src.size(1), batch.tgt_in.size(1), batch.tgt_out.size(1))
        if len(indices) * width > MAX_TOKENS:
            assert len(indices) == 1, "only a sentence too long on its own may exceed the budget"
            oversize += 1
    assert oversize == 1


def test_max_sentences_caps_batch_size():
    src, tgt = _corpus()
    for indices in _batches(src, tgt, max_sentences=3):
        assert 1 <= len(indices) <= 3


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_every_index_appears_exactly_once_per_epoch(epoch):
    src, tgt = _corpus()
    flat = [i for b in _batches(src, tgt, epoch=epoch) for i in b]
    assert sorted(flat) == list(range(len(src)))


def test_batches_depend_only_on_seed_and_epoch():
    src, tgt = _corpus()
    assert _batches(src, tgt, seed=3, epoch=2) == _batches(src, tgt, seed=3, epoch=2)
    assert _batches(src, tgt, seed=3, epoch=2) != _batches(src, tgt, seed=3, epoch=3)
    assert _batches(src, tgt, seed=3, epoch=2) != _batches(src, tgt, seed=4, epoch=2)


def test_batches_group_similar_lengths():
    """Bucketing: padding is far below that of random batches of the same sizes."""
    src, tgt = _corpus(seed=5)
    batches = _batches(src, tgt)
    lengths = np.array([max(len(s), len(t)) + 1 for s, t in zip(src, tgt, strict=True)])

    def waste(groups):
        return sum(len(g) * lengths[g].max() - lengths[g].sum() for g in groups)

    rng = np.random.default_rng(0)
    perm = rng.permutation(len(src))
    sizes = np.cumsum([len(b) for b in batches])[:-1]
    random_groups = np.split(perm, sizes)
    assert waste([np.array(b) for b in batches]) < waste(random_groups) / 2


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for name in ("src", "src_lens", "tgt_in", "tgt_out", "tgt_lens", "indices"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name


def test_iterate_batches_is_identical_with_and_without_workers():
    src, tgt = _corpus(n=60)
    batches = _batches(src, tgt)
    serial = list(iterate_batches(batches, src, tgt, num_workers=0))
    parallel = list(iterate_batches(batches, src, tgt, num_workers=2))
    assert len(serial) == len(batches)
    _assert_same_batches(serial, parallel)


def test_iterate_batches_start_skips_batches():
    src, tgt = _corpus(n=40)
    batches = _batches(src, tgt)
    full = list(iterate_batches(batches, src, tgt))
    _assert_same_batches(list(iterate_batches(batches, src, tgt, start=3)), full[3:])


def test_collate_adds_specials_and_masks_match_lengths():
    src = [[4, 5, 6], [7], [8, 9]]
    tgt = [[10], [11, 12, 13], []]
    batch = collate([2, 0, 1], src, tgt)
    assert batch.indices.tolist() == [2, 0, 1]
    assert batch.src_lens.tolist() == [3, 4, 2]
    assert batch.tgt_lens.tolist() == [1, 2, 4]
    for row, i in enumerate([2, 0, 1]):
        n, m = len(src[i]) + 1, len(tgt[i]) + 1
        assert batch.src[row, :n].tolist() == src[i] + [EOS]
        assert batch.tgt_in[row, :m].tolist() == [BOS] + tgt[i]
        assert batch.tgt_out[row, :m].tolist() == tgt[i] + [EOS]
        assert torch.all(batch.src[row, n:] == PAD) and torch.all(batch.tgt_out[row, m:] == PAD)
    assert torch.equal(batch.src_mask, batch.src != PAD)
    assert torch.equal(batch.tgt_mask, batch.tgt_out != PAD)
    assert torch.equal(batch.tgt_mask, batch.tgt_in != PAD)
    assert batch.num_tokens == sum(len(t) + 1 for t in tgt)


def test_pad_uses_value_and_longest_length():
    out = pad([[1, 2], [3], [4, 5, 6]], value=-1)
    assert out.tolist() == [[1, 2, -1], [3, -1, -1], [4, 5, 6]]
    assert out.dtype == torch.long
