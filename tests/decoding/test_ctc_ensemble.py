"""Ensemble ranking of whole texts by CTC log-likelihood: each score against brute force over all alignments,
the empty and the impossible candidate, and the pooled ranking."""

import math

import pytest
import torch
from testkit import ctc_label_log_probs

from transduce.decoding.ctc_ensemble import ctc_log_likelihoods, rank_candidates


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("frames", [1, 3, 5])
def test_log_likelihoods_equal_brute_force_over_alignments(seed: int, frames: int) -> None:
    torch.manual_seed(seed)
    log_probs = (2 * torch.randn(frames, 3)).log_softmax(-1)  # blank + 2 tokens
    exact = ctc_label_log_probs(log_probs)  # every label sequence that fits, with its probability
    labels = sorted(exact)
    got = ctc_log_likelihoods(log_probs, labels)
    for label, value in zip(labels, got.tolist(), strict=True):
        assert math.isclose(value, exact[label], rel_tol=1e-5, abs_tol=1e-5), label
    # all label sequences together carry all the probability
    assert math.isclose(torch.logsumexp(got, 0).item(), 0.0, abs_tol=1e-5)


def test_empty_candidate_is_all_blanks_and_impossible_is_minus_infinity() -> None:
    torch.manual_seed(0)
    log_probs = torch.randn(4, 3).log_softmax(-1)
    empty, too_long, repeats = ctc_log_likelihoods(log_probs, [[], [1, 2, 1, 2, 1], [1, 1, 1]]).tolist()
    assert math.isclose(empty, log_probs[:, 0].sum().item(), rel_tol=1e-6)
    assert too_long == -math.inf
    assert repeats == -math.inf  # 1 1 1 needs 5 frames (blanks between the repeats), there are 4
    assert ctc_log_likelihoods(torch.zeros(0, 3), [[], [1]]).tolist() == [0.0, -math.inf]  # no frames at all


def test_rank_sums_models_and_keeps_pool_order_on_ties() -> None:
    texts = ["a", "b", "c"]
    ranked = rank_candidates(texts, [torch.tensor([-1.0, -3.0, -2.0]), torch.tensor([-4.0, -1.0, -3.0])])
    assert [t for t, _ in ranked] == ["b", "a", "c"] and [s for _, s in ranked] == [-4.0, -5.0, -5.0]
    with pytest.raises(ValueError, match="scores must be"):
        rank_candidates(texts, [torch.zeros(2)])
    with pytest.raises(ValueError, match="must be"):
        ctc_log_likelihoods(torch.zeros(1, 4, 3), [[1]])


def test_only_empty_candidates_score_all_blanks() -> None:
    torch.manual_seed(1)
    log_probs = torch.randn(3, 4).log_softmax(-1)
    got = ctc_log_likelihoods(log_probs, [[], []]).tolist()
    assert all(math.isclose(v, log_probs[:, 0].sum().item(), rel_tol=1e-6) for v in got)
