"""Shallow fusion of a token-level n-gram language model into CTC prefix beam search.

A prefix's fused score is  log p_CTC(prefix | audio) + weight * log p_LM(prefix) + bonus * len(prefix),
and a finished hypothesis also gets  weight * log p_LM(</s> | prefix)  (as in pyctcdecode, ESPnet's
``lm_weight`` and WeNet's context scoring). The LM's words are the recognizer's SentencePiece pieces, so
one model works for char, BPE or word units; train it with ``transduce lm``. An optional ``Lexicon``
subtracts a penalty for every completed word it does not know (pyctcdecode's ``unk_score_offset``), which
steers character models away from misspellings the character LM still allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from transduce.data.tokenizer import EOS as EOS_ID
from transduce.data.tokenizer import Tokenizer
from transduce.models.ngram import BOS, EOS, NgramLM, train_kneser_ney

SPECIALS = EOS_ID + 1  # ids below are pad (= CTC blank), unk, bos, eos: never LM words (unk maps to <unk>)

Prefix = tuple[int, ...]
WORD_START = "\u2581"  # SentencePiece's word-boundary mark: a piece starting with it begins a word


class Lexicon:
    """Known words, and a penalty charged once for each word that is not one of them: as soon as the word
    being spelled stops being the beginning of any known word (so the beam drops misspellings early, as
    pyctcdecode does), or when it ends as a known word's beginning only. ``pieces[i]`` is token i's piece."""

    def __init__(self, words: Iterable[str], pieces: Sequence[str], penalty: float) -> None:
        self.words, self.pieces, self.penalty = frozenset(words), list(pieces), penalty
        self.starts = frozenset(w[:i] for w in self.words for i in range(len(w) + 1))  # every prefix, "" too
        self._cache: dict[Prefix, str] = {}

    def _spelled(self, prefix: Prefix) -> str:
        """The word being spelled at the end of ``prefix`` (its pieces since the last boundary, joined)."""
        start = len(prefix)
        while start > 0 and not self.pieces[prefix[start - 1]].startswith(WORD_START):
            start -= 1
        tokens = prefix[max(start - 1, 0) :]
        word = self._cache.get(tokens)
        if word is None:
            word = "".join(self.pieces[t] for t in tokens).replace(WORD_START, "")
            if len(self._cache) > 1_000_000:
                self._cache.clear()
            self._cache[tokens] = word
        return word

    def word_end(self, prefix: Prefix) -> float:
        """-penalty if the word ending with ``prefix`` is unknown and was not charged while spelled, else 0."""
        word = self._spelled(prefix)
        return -self.penalty if word in self.starts and word not in self.words and word else 0.0

    def extend(self, prefix: Prefix, token: int) -> float:
        """The lexicon's term for appending ``token``: a new word ends the previous one."""
        piece = self.pieces[token]
        if piece.startswith(WORD_START):
            first = piece.replace(WORD_START, "")
            return self.word_end(prefix) - (self.penalty if first not in self.starts else 0.0)
        before = self._spelled(prefix)
        return -self.penalty if before in self.starts and before + piece not in self.starts else 0.0


class LMFusion:
    """``extend(prefix, token)`` and ``end(prefix)`` give the weighted LM terms to add to CTC log-probs.

    ``pieces[i]`` is the LM word of token id i (the tokenizer's piece). ``weight`` scales natural-log LM
    probabilities; ``bonus`` is added per token, countering the LM's preference for short outputs;
    ``lexicon`` (optional) penalizes unknown words as each one ends.
    """

    def __init__(self, lm: NgramLM, pieces: Sequence[str], weight: float, bonus: float = 0.0,
                 lexicon: Lexicon | None = None) -> None:
        self.lm, self.pieces, self.weight, self.bonus = lm, list(pieces), weight, bonus
        self.lexicon = lexicon
        self.context = max(lm.order - 1, 0)
        self._cache: dict[tuple[Prefix, int], float] = {}

    def _score(self, prefix: Prefix, word: str, key: int) -> float:
        ctx = prefix[len(prefix) - self.context :] if self.context else ()
        cached = self._cache.get((ctx, key))
        if cached is None:
            words = [self.pieces[i] for i in ctx]
            if len(ctx) < self.context:  # the sentence start is still in view
                words.insert(0, BOS)
            cached = self.weight * self.lm.log_prob(words, word)
            if len(self._cache) > 1_000_000:
                self._cache.clear()
            self._cache[(ctx, key)] = cached
        return cached

    def extend(self, prefix: Prefix, token: int) -> float:
        """Weighted log p_LM(token | prefix) + bonus (+ the lexicon's term)."""
        score = self._score(prefix, self.pieces[token], token) + self.bonus
        return score + self.lexicon.extend(prefix, token) if self.lexicon is not None else score

    def end(self, prefix: Prefix) -> float:
        """Weighted log p_LM(</s> | prefix) (+ the lexicon's term for the last word), added once a
        hypothesis is final."""
        score = self._score(prefix, EOS, -1)
        return score + self.lexicon.word_end(prefix) if self.lexicon is not None else score


def piece_sentences(tokenizer: Tokenizer, lines: Iterable[str]) -> Iterator[list[str]]:
    """Each non-empty line as the tokenizer's pieces (the LM's words)."""
    for line in lines:
        if line.strip():
            yield tokenizer.pieces(line)


def train_piece_lm(tokenizer: Tokenizer, lines: Iterable[str], order: int) -> NgramLM:
    """Kneser-Ney n-gram model over the tokenizer's pieces; every piece the recognizer can emit is in the
    vocabulary, seen in ``lines`` or not."""
    emitted = tokenizer.id_to_piece(list(range(SPECIALS, len(tokenizer))))
    return train_kneser_ney(piece_sentences(tokenizer, lines), order, vocab=emitted)
