"""Kneser-Ney n-gram estimation and the ARPA format: hand-computed probabilities, normalization, round trips,
third-party ARPA files and clear errors."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest

from transduce.data.text import DataError
from transduce.models.ngram import BOS, EOS, UNK, NgramLM, _discounts, train_kneser_ney


def _corpus(seed: int = 0, sentences: int = 300) -> list[list[str]]:
    rng = random.Random(seed)
    words = ["a", "b", "c", "d", "e"]
    return [[rng.choice(words[: 2 + i % 4]) for i in range(rng.randint(1, 8))] for _ in range(sentences)]


def test_bigram_probabilities_equal_the_kneser_ney_formula() -> None:
    """Too little data for count-of-count discounts, so D1, D2, D3+ = 0.5, 1, 1.5. Continuation counts of the
    unigrams (distinct left neighbours): a {<s>}=1, b {a, <s>}=2, c {a}=1, </s> {b, c}=2; vocabulary a b c
    </s> <unk>."""
    lm = train_kneser_ney([["a", "b"], ["a", "c"], ["b"]], order=2)
    total, mass, vocab = 1 + 2 + 1 + 2, 0.5 + 1.0 + 0.5 + 1.0, 5
    uni = {"a": (1 - 0.5) / total + mass / total / vocab, "b": (2 - 1.0) / total + mass / total / vocab,
           "c": (1 - 0.5) / total + mass / total / vocab, EOS: (2 - 1.0) / total + mass / total / vocab,
           UNK: mass / total / vocab}
    for word, p in uni.items():
        assert lm.log_prob([], word) == pytest.approx(math.log(p), abs=1e-12)
    # context "a": raw bigram counts a b = 1, a c = 1 -> discounted mass 1.0 of 2
    assert lm.log_prob(["a"], "b") == pytest.approx(math.log((1 - 0.5) / 2 + 1.0 / 2 * uni["b"]), abs=1e-12)
    assert lm.log_prob(["a"], EOS) == pytest.approx(math.log(1.0 / 2 * uni[EOS]), abs=1e-12)
    # context <s>: <s> a = 2, <s> b = 1 -> mass 1.0 + 0.5 of 3
    assert lm.log_prob([BOS], "a") == pytest.approx(math.log((2 - 1.0) / 3 + 1.5 / 3 * uni["a"]), abs=1e-12)
    assert lm.log_prob(["zzz"], "b") == pytest.approx(math.log(uni["b"]), abs=1e-12)  # unseen context
    assert lm.log_prob(["a"], "never-seen") == lm.log_prob(["a"], UNK)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_is_a_distribution(order: int) -> None:
    lm = train_kneser_ney(_corpus(), order, vocab=["f"])  # f: in the vocabulary, never seen
    words = ["a", "b", "c", "d", "e", "f", EOS, UNK]
    assert sorted(lm.vocab) == sorted([*words, BOS])
    contexts = [[], [BOS], ["a"], [BOS, "a", "b"], ["e", "e", "e", "e"], ["f", "a"], ["x", "y"], ["c", "d", "a"]]
    for context in contexts:
        total = sum(math.exp(lm.log_prob(context, w)) for w in words)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_discounts_follow_chen_and_goodman() -> None:
    n1, n2, n3, n4 = 10, 6, 3, 2
    y = n1 / (n1 + 2 * n2)
    want = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    assert _discounts([1] * n1 + [2] * n2 + [3] * n3 + [4] * n4 + [7] * 5 + [30]) == pytest.approx(want)
    assert _discounts([1] * n1 + [2] * n2 + [3] * n3 + [7] * 5) == (0.5, 1.0, 1.5)  # no count of exactly 4


def test_unigrams_use_the_estimated_discounts() -> None:
    counts = {**{w: 1 for w in "abcdefgh"}, "i": 2, "j": 2, "k": 2, "l": 3, "m": 3, "n": 4, "o": 9}
    lm = train_kneser_ney([[w] * c for w, c in counts.items()], order=1)
    counts[EOS] = len(counts)  # one </s> per sentence
    d = _discounts(counts.values())
    assert d != (0.5, 1.0, 1.5)
    total = sum(counts.values())
    gamma = sum(d[min(c, 3) - 1] for c in counts.values()) / total
    for word, c in counts.items():
        want = (c - d[min(c, 3) - 1]) / total + gamma / (len(counts) + 1)  # + <unk>
        assert lm.log_prob([], word) == pytest.approx(math.log(want), abs=1e-12)


def test_higher_orders_predict_held_out_text_better() -> None:
    held_out = _corpus(seed=7, sentences=200)
    lm = train_kneser_ney(_corpus(sentences=3000), 3)
    assert lm.perplexity(held_out) < train_kneser_ney(_corpus(sentences=3000), 1).perplexity(held_out)


@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_round_trip_keeps_every_probability(name: str, tmp_path: Path) -> None:
    lm = train_kneser_ney(_corpus(), 3)
    lm.save_arpa(tmp_path / name)
    back = NgramLM.load_arpa(tmp_path / name)
    assert back.order == 3 and set(back.entries) == set(lm.entries)
    for context in itertools.product([BOS, "a", "c", "q"], repeat=2):
        for word in ["a", "b", "e", EOS, "q"]:
            assert back.log10_prob(context, word) == pytest.approx(lm.log10_prob(context, word), abs=1e-6)


def test_perplexity_is_ten_to_the_minus_mean_log10_prob() -> None:
    lm = train_kneser_ney(_corpus(), 2)
    sentences = [["a", "b"], ["e", "e", "d"]]
    logs = [lm.log10_prob([BOS, *s[:i]], w) for s in sentences for i, w in enumerate([*s, EOS])]
    assert lm.perplexity(sentences) == pytest.approx(10 ** (-sum(logs) / len(logs)))


ARPA = """Written by hand, as KenLM or SRILM would write it.

\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.30103
-0.5\ta\t-0.2
-0.7\tb\t-0.1
-0.6\t</s>

\\2-grams:
-0.3\t<s> a
-0.4\ta b
-0.2\tb </s>

\\end\\
"""


def test_reads_a_third_party_arpa_file_and_backs_off(tmp_path: Path) -> None:
    path = tmp_path / "hand.arpa"
    path.write_text(ARPA)
    lm = NgramLM.load_arpa(path)
    assert lm.order == 2
    assert lm.log10_prob(["a"], "b") == pytest.approx(-0.4)  # stored bigram
    assert lm.log10_prob(["a"], "a") == pytest.approx(-0.2 + -0.5)  # bow(a) + p(a)
    assert lm.log10_prob([BOS], "b") == pytest.approx(-0.30103 + -0.7)
    assert lm.log10_prob(["</s>"], "b") == pytest.approx(-0.7)  # no back-off weight stored: 0
    assert lm.log10_prob(["b"], "zebra") == pytest.approx(-0.1 + -1.0)  # unknown word -> <unk>
    assert lm.sentence_log10_prob(["a", "b"]) == pytest.approx(-0.3 - 0.4 - 0.2)


@pytest.mark.parametrize(("change", "message"), [
    (("-0.4\ta b", "-0.4\ta"), "hand.arpa:16: expected log-prob, 2 words"),
    (("-0.5\ta\t-0.2", "minus\ta\t-0.2"), "hand.arpa:10: expected a number, got 'minus'"),
    (("ngram 2=3", "ngram 2=4"), "header declares 4 2-grams but the file has 3"),
    (("\\data\\", "data"), "not an ARPA file"),
])
def test_malformed_arpa_errors_name_file_and_line(change: tuple[str, str], message: str, tmp_path: Path) -> None:
    path = tmp_path / "hand.arpa"
    path.write_text(ARPA.replace(*change))
    with pytest.raises(DataError, match=message):
        NgramLM.load_arpa(path)
    with pytest.raises(DataError, match="no such language model file"):
        NgramLM.load_arpa(tmp_path / "missing.arpa")
