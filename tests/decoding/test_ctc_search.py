"""CTC searches on hand-built log-probs: prefix beam search vs brute force over all alignments,
greedy vs beam 1 on peaky outputs, n-best order and timestamps."""

import itertools
import math

import pytest
import torch
from testkit import collapse, ctc_label_log_probs

from transduce.decoding.ctc import ctc_beam_search, ctc_greedy, ctc_prefix_beam_search


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("frames", [1, 3, 6])
def test_prefix_beam_search_equals_brute_force(seed, frames):
    torch.manual_seed(seed)
    log_probs = (2 * torch.randn(frames, 3)).log_softmax(-1)  # blank + 2 tokens
    exact = ctc_label_log_probs(log_probs)
    top = sorted(exact.values(), reverse=True)[:5]
    hyps = ctc_prefix_beam_search(log_probs, beam=100, nbest=5)
    assert len(hyps) == len(top) and len({tuple(h.tokens) for h in hyps}) == len(hyps)
    for hyp, want in zip(hyps, top, strict=True):
        assert math.isclose(hyp.score, exact[tuple(hyp.tokens)], rel_tol=1e-5, abs_tol=1e-5)
        assert math.isclose(hyp.score, want, rel_tol=1e-5, abs_tol=1e-5)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hyps))


def peaky(path, vocab=4, peak=0.97):
    """Log-probs putting ``peak`` on path[t] at each frame and the rest spread evenly."""
    probs = torch.full((len(path), vocab), (1 - peak) / (vocab - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = peak
    return probs.log()


@pytest.mark.parametrize(
    "path", [[0, 1, 0, 2, 0], [1, 0, 1, 0, 0, 3], [2, 0, 0, 2, 3, 0, 1], [0, 0, 0], [3, 0, 1, 0, 2, 0, 3]]
)
def test_beam_one_equals_greedy_on_peaky_outputs(path):
    """Beam 1 keeps one prefix, which can differ from the best path in general (a prefix's probability
    sums over alignments); on peaky outputs with one-frame spikes the best path dominates, so they agree."""
    log_probs = peaky(path)
    greedy = ctc_greedy(log_probs[None], torch.tensor([len(path)]))[0]
    beam = ctc_prefix_beam_search(log_probs, beam=1)[0]
    assert beam.tokens == greedy.tokens == list(collapse(path))
    assert beam.timestamps == greedy.timestamps == [t for t, p in enumerate(path) if p != 0]


def test_greedy_collapses_repeats_and_sums_best_path():
    path = [1, 1, 0, 1, 2, 2, 0]
    log_probs = peaky(path)
    hyp = ctc_greedy(log_probs[None], torch.tensor([7]))[0]
    assert hyp.tokens == [1, 1, 2] and hyp.timestamps == [0, 3, 4]
    assert math.isclose(hyp.score, 7 * math.log(0.97), rel_tol=1e-6)


def test_timestamps_are_increasing_and_within_length():
    torch.manual_seed(0)
    log_probs = (3 * torch.randn(2, 30, 6)).log_softmax(-1)
    lengths = torch.tensor([30, 17])
    for row, hyps in enumerate(ctc_beam_search(log_probs, lengths, beam=8, token_prune=4, nbest=4)):
        assert len(hyps) == 4 and all(a.score >= b.score for a, b in itertools.pairwise(hyps))
        for hyp in hyps:
            assert len(hyp.timestamps) == len(hyp.tokens)
            assert all(a < b for a, b in itertools.pairwise(hyp.timestamps))
            assert all(0 <= t < lengths[row] for t in hyp.timestamps)
            for token, t in zip(hyp.tokens, hyp.timestamps, strict=True):
                assert log_probs[row, t, token] > math.log(1 / 6) - 3  # a frame where the token is plausible


def test_timestamp_is_the_peak_frame_of_a_long_token():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    hyp = ctc_prefix_beam_search(probs.log(), beam=4)[0]
    assert hyp.tokens == [1] and hyp.timestamps == [1]


def test_pruning_keeps_the_best_token_and_matches_unpruned_on_peaky_outputs():
    log_probs = peaky([0, 1, 1, 0, 2, 0, 3, 3])
    full = ctc_prefix_beam_search(log_probs, beam=4)[0]
    for kwargs in [{"token_prune": 1}, {"token_prune": 2}, {"prob_prune": math.log(0.5)}]:
        pruned = ctc_prefix_beam_search(log_probs, beam=4, **kwargs)[0]
        assert pruned.tokens == full.tokens == [1, 2, 3]
    assert ctc_prefix_beam_search(log_probs, beam=4, prob_prune=0.0)[0].tokens == [1, 2, 3]


def test_prefix_search_carried_across_chunks_equals_whole_utterance() -> None:
    from transduce.decoding.ctc import CTCPrefixSearch, ctc_prefix_beam_search

    gen = torch.Generator().manual_seed(3)
    log_probs = torch.randn(40, 6, generator=gen).mul(3).log_softmax(-1)
    whole = ctc_prefix_beam_search(log_probs, beam=4, nbest=3)
    search = CTCPrefixSearch(beam=4)
    for start, end in [(0, 7), (7, 8), (8, 8), (8, 25), (25, 40)]:
        search.advance(log_probs[start:end])
    assert search.frames == 40
    assert search.nbest(3) == whole
