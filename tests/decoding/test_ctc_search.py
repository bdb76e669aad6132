"""CTC searches on hand-built log-probs: prefix beam search vs brute force over all alignments,
greedy vs beam 1 on peaky outputs, n-best order and timestamps; the fast search vs the original pure-Python one
(``ctc_prefix_reference``) on random log-probs with every option."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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


# -- the fast search (``CTCPrefixSearch``) against the original pure-Python one, run here as the reference ----------

def _log_probs(frames: int, vocab: int, seed: int, shape: str) -> torch.Tensor:
    """(T, V) log-probs: "peaked" like a trained CTC model (mostly blank, one token spiking elsewhere), "flat"
    (every token plausible), or "tied" (few distinct frames of whole-number logits: many exactly equal scores,
    so tie-breaking is tested)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, vocab, generator=g)
    if shape == "peaked":
        labels = torch.randint(1, vocab, (frames,), generator=g) if vocab > 1 else torch.zeros(frames, dtype=torch.long)
        spoken = torch.rand(frames, generator=g) < 0.3
        logits[torch.arange(frames), torch.where(spoken, labels, 0)] += 8
    elif shape == "tied":  # frames drawn from 3 rows of small whole numbers: equal scores and equal paths abound
        rows = torch.randint(0, 3, (3, vocab), generator=g).float()
        logits = rows[torch.randint(0, 3, (frames,), generator=g)]
    return logits.log_softmax(-1)


def _assert_same(fast: list, reference: list) -> None:
    assert [(h.tokens, h.timestamps) for h in fast] == [(h.tokens, h.timestamps) for h in reference]
    for got, want in zip(fast, reference, strict=True):
        assert got.score == want.score or math.isclose(got.score, want.score, rel_tol=1e-9)


def _both(log_probs: torch.Tensor, cuts: list[int], **options) -> tuple:
    """The fast search fed in chunks cut at ``cuts`` and the reference fed once -> both searches."""
    from transduce.decoding.ctc import CTCPrefixSearch
    from transduce.decoding.ctc_prefix_reference import ReferencePrefixSearch

    fast, reference = CTCPrefixSearch(**options), ReferencePrefixSearch(**options)
    bounds = [0, *sorted(cuts), log_probs.size(0)]
    for start, end in itertools.pairwise(bounds):
        fast.advance(log_probs[start:end])
    reference.advance(log_probs)
    assert fast.frames == reference.frames == log_probs.size(0)
    return fast, reference


@given(frames=st.integers(0, 30), vocab=st.integers(1, 12), seed=st.integers(0, 2**16),
       shape=st.sampled_from(["peaked", "flat", "tied"]), beam=st.sampled_from([1, 2, 3, 4, 8, 20]),
       token_prune=st.sampled_from([0, 0, 1, 2, 5]), prob_prune=st.sampled_from([None, None, -1.0, -4.0, 0.0]),
       cuts=st.lists(st.integers(0, 30), max_size=3))
@settings(max_examples=150, deadline=None, derandomize=True, database=None)
def test_fast_search_equals_reference(frames, vocab, seed, shape, beam, token_prune, prob_prune, cuts) -> None:
    log_probs = _log_probs(frames, vocab, seed, shape)
    fast, reference = _both(log_probs, [min(c, frames) for c in cuts], beam=beam, token_prune=token_prune,
                            prob_prune=prob_prune)
    for n in [1, 3, 100]:
        _assert_same(fast.nbest(n), reference.nbest(n))
    _assert_same(fast.nbest(5, final=True), reference.nbest(5, final=True))


@pytest.mark.parametrize("beam", [1, 8, 20])
def test_fast_search_equals_reference_on_a_large_vocabulary(beam: int) -> None:
    """V = 1000 (the captions model's size): the fast search only scores the first beam + P tokens of a frame."""
    for shape in ["peaked", "flat"]:
        log_probs = _log_probs(6, 1000, beam, shape)
        fast, reference = _both(log_probs, [4], beam=beam)
        _assert_same(fast.nbest(beam), reference.nbest(beam))


@pytest.mark.parametrize("seed", range(6))
def test_fast_search_with_fusion_and_lexicon_equals_reference(seed: int) -> None:
    from transduce.decoding.lm_fusion import Lexicon, LMFusion
    from transduce.models.ngram import train_kneser_ney

    pieces = ["<blank>", "\u2581", "a", "b", "\u2581a", "c"]
    lm = train_kneser_ney([list("\u2581ab\u2581a"), list("\u2581a\u2581ab"), ["\u2581a", "c", "b"]] * 2, order=3)
    lexicon = Lexicon(["a", "ab", "acb"], pieces, penalty=2.0) if seed % 2 else None
    fusion = LMFusion(lm, pieces, weight=[0.0, 0.6, 2.0][seed % 3], bonus=[0.7, -0.4][seed % 2], lexicon=lexicon)
    for shape, beam, prune in [("flat", 3, 0), ("peaked", 8, 0), ("tied", 4, 3)]:
        log_probs = _log_probs(20, len(pieces), seed, shape)
        fast, reference = _both(log_probs, [3, 11], beam=beam, token_prune=prune, fusion=fusion)
        _assert_same(fast.nbest(10), reference.nbest(10))
        _assert_same(fast.nbest(10, final=True), reference.nbest(10, final=True))


def test_beam_below_one_is_refused() -> None:
    from transduce.decoding.ctc import CTCPrefixSearch

    with pytest.raises(ValueError, match="beam must be >= 1"):
        CTCPrefixSearch(beam=0)
