"""Shallow fusion of a token-level n-gram language model into CTC prefix beam search.

A prefix's fused score is  log p_CTC(prefix | audio) + weight * log p_LM(prefix) + bonus * len(prefix),
and a finished hypothesis also gets  weight * log p_LM(</s> | prefix)  (as in pyctcdecode, ESPnet's
``lm_weight`` and WeNet's context scoring). The LM's words are the recognizer's SentencePiece pieces, so
one model works for char, BPE or word units; train it with ``transduce lm``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from transduce.data.tokenizer import EOS as EOS_ID
from transduce.data.tokenizer import Tokenizer
from transduce.models.ngram import BOS, EOS, NgramLM, train_kneser_ney

SPECIALS = EOS_ID + 1  # ids below are pad (= CTC blank), unk, bos, eos: never LM words (unk maps to <unk>)

Prefix = tuple[int, ...]


class LMFusion:
    """``extend(prefix, token)`` and ``end(prefix)`` give the weighted LM terms to add to CTC log-probs.

    ``pieces[i]`` is the LM word of token id i (the tokenizer's piece). ``weight`` scales natural-log LM
    probabilities; ``bonus`` is added per token, countering the LM's preference for short outputs.
    """

    def __init__(self, lm: NgramLM, pieces: Sequence[str], weight: float, bonus: float = 0.0) -> None:
        self.lm, self.pieces, self.weight, self.bonus = lm, list(pieces), weight, bonus
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
        """Weighted log p_LM(token | prefix) + bonus."""
        return self._score(prefix, self.pieces[token], token) + self.bonus

    def end(self, prefix: Prefix) -> float:
        """Weighted log p_LM(</s> | prefix), added once a hypothesis is final."""
        return self._score(prefix, EOS, -1)


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
