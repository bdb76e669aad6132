"""Shallow fusion of an n-gram LM into CTC prefix beam search, against brute force over all alignments
plus the LM's sentence score computed directly."""

from __future__ import annotations

import math

import pytest
import torch
from testkit import ctc_label_log_probs

from transduce.decoding.ctc import CTCPrefixSearch, ctc_prefix_beam_search
from transduce.decoding.lm_fusion import Lexicon, LMFusion
from transduce.models.ngram import BOS, EOS, train_kneser_ney

PIECES = ["<blank>", "x", "y"]  # token id -> LM word; 0 is the CTC blank


@pytest.fixture(scope="module")
def lm():
    text = [["x", "y"], ["x", "y", "y"], ["x"], ["y", "x", "y"], ["x", "y", "x", "y"]] * 3
    return train_kneser_ney(text, order=3)


def fused_reference(lm, log_probs, weight: float, bonus: float) -> dict[tuple[int, ...], float]:
    """Every label sequence -> log p_CTC (all alignments) + weight * log p_LM(y </s>) + bonus * |y|."""
    out = {}
    for labels, ctc in ctc_label_log_probs(log_probs).items():
        words = [PIECES[t] for t in labels]
        lm_total = sum(lm.log_prob([BOS, *words[:i]], w) for i, w in enumerate([*words, EOS]))
        out[labels] = ctc + weight * lm_total + bonus * len(labels)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("weight", "bonus"), [(0.5, 0.0), (1.5, 0.7), (3.0, -0.5)])
def test_fused_beam_search_equals_brute_force(lm, seed: int, weight: float, bonus: float) -> None:
    torch.manual_seed(seed)
    log_probs = (2 * torch.randn(5, 3)).log_softmax(-1)
    exact = fused_reference(lm, log_probs, weight, bonus)
    best = sorted(exact.items(), key=lambda kv: kv[1], reverse=True)[:4]
    hyps = ctc_prefix_beam_search(log_probs, beam=100, nbest=4, fusion=LMFusion(lm, PIECES, weight, bonus))
    assert [tuple(h.tokens) for h in hyps] == [labels for labels, _ in best]
    for hyp, (_, score) in zip(hyps, best, strict=True):
        assert math.isclose(hyp.score, score, rel_tol=1e-6, abs_tol=1e-6)


def test_weight_zero_is_plain_ctc_search(lm) -> None:
    torch.manual_seed(3)
    log_probs = (3 * torch.randn(12, 3)).log_softmax(-1)
    plain = ctc_prefix_beam_search(log_probs, beam=4, nbest=4)
    fused = ctc_prefix_beam_search(log_probs, beam=4, nbest=4, fusion=LMFusion(lm, PIECES, 0.0))
    assert [(h.tokens, h.score, h.timestamps) for h in fused] == [(h.tokens, h.score, h.timestamps) for h in plain]


def test_the_lm_overrules_weak_acoustic_evidence(lm) -> None:
    """Frames leaning slightly to y: plain search says y y; the LM (sentences start with x, then y) says x y."""
    unsure = torch.tensor([[-5.0, math.log(0.45), math.log(0.55)]]).log_softmax(-1)
    blank = torch.tensor([[0.0, -9.0, -9.0]]).log_softmax(-1)
    log_probs = torch.cat([unsure, blank, unsure])
    assert ctc_prefix_beam_search(log_probs, beam=8)[0].tokens == [2, 2]
    assert ctc_prefix_beam_search(log_probs, beam=8, fusion=LMFusion(lm, PIECES, 1.0))[0].tokens == [1, 2]


def test_chunked_search_with_fusion_equals_one_call(lm) -> None:
    torch.manual_seed(5)
    log_probs = (2 * torch.randn(17, 3)).log_softmax(-1)
    fusion = LMFusion(lm, PIECES, 0.8, 0.3)
    whole = ctc_prefix_beam_search(log_probs, beam=5, nbest=3, fusion=fusion)
    search = CTCPrefixSearch(beam=5, fusion=fusion)
    for chunk in log_probs.split(4):
        search.advance(chunk)
    chunked = search.nbest(3, final=True)
    assert [(h.tokens, h.timestamps) for h in chunked] == [(h.tokens, h.timestamps) for h in whole]
    assert [h.score for h in chunked] == pytest.approx([h.score for h in whole])
    partial = {tuple(h.tokens): h.score for h in search.nbest(5)}  # without the end-of-sentence term
    for hyp in chunked:
        assert partial[tuple(hyp.tokens)] + fusion.end(tuple(hyp.tokens)) == pytest.approx(hyp.score)


WORD_PIECES = ["<blank>", "\u2581", "a", "b"]  # a char tokenizer's boundary piece and two letters


def words_of(labels: tuple[int, ...]) -> list[str]:
    return "".join(WORD_PIECES[t] for t in labels).replace("\u2581", " ").split()


@pytest.mark.parametrize("seed", range(4))
def test_lexicon_penalty_equals_brute_force_over_words(seed: int) -> None:
    text = [list("\u2581ab\u2581a"), list("\u2581a\u2581ab"), list("\u2581ab")] * 2
    lm = train_kneser_ney(text, order=2)
    torch.manual_seed(seed)
    log_probs = (2 * torch.randn(5, 4)).log_softmax(-1)
    weight, bonus, penalty = 0.6, 0.4, 3.0
    exact = {}
    for labels, ctc in ctc_label_log_probs(log_probs).items():
        words = [WORD_PIECES[t] for t in labels]
        lm_total = sum(lm.log_prob([BOS, *words[:i]], w) for i, w in enumerate([*words, EOS]))
        unknown = sum(w not in {"a", "ab"} for w in words_of(labels))
        exact[labels] = ctc + weight * lm_total + bonus * len(labels) - penalty * unknown
    best = sorted(exact.items(), key=lambda kv: kv[1], reverse=True)[:5]
    fusion = LMFusion(lm, WORD_PIECES, weight, bonus, Lexicon(["a", "ab"], WORD_PIECES, penalty))
    hyps = ctc_prefix_beam_search(log_probs, beam=500, nbest=5, fusion=fusion)
    assert [tuple(h.tokens) for h in hyps] == [labels for labels, _ in best]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in best], abs=1e-6)
    assert any(words_of(labels) and set(words_of(labels)) - {"a", "ab"} for labels in exact)  # penalties in play


def test_lexicon_charges_each_unknown_word_once_and_early() -> None:
    lexicon = Lexicon(["ab", "abab"], WORD_PIECES, 5.0)

    def charges(labels: tuple[int, ...]) -> list[float]:
        return [lexicon.extend(labels[:i], t) for i, t in enumerate(labels)] + [lexicon.word_end(labels)]

    assert charges((1, 2, 3)) == [0.0] * 4  # "ab"
    assert charges((1, 2, 3, 1, 3)) == [0.0, 0.0, 0.0, 0.0, -5.0, 0.0]  # "ab b": charged at the b
    assert charges((1, 3, 3, 2)) == [0.0, -5.0, 0.0, 0.0, 0.0]  # "bba": once, where it went wrong
    assert charges((1, 2, 3, 2)) == [0.0, 0.0, 0.0, 0.0, -5.0]  # "aba": a known beginning, not a word
    assert charges((2, 3)) == [0.0, 0.0, 0.0]  # no boundary piece yet: the whole prefix is the word
    assert charges((1, 2, 3, 1)) == [0.0] * 5 and lexicon.word_end(()) == 0.0  # empty word
