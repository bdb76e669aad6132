"""Back-off n-gram language models: interpolated modified Kneser-Ney estimation and the ARPA format.

The model is a table from n-gram (a tuple of word strings) to (log10 probability, log10 back-off weight),
exactly what an ARPA file holds, so a model trained here and one written by KenLM's ``lmplz`` or SRILM's
``ngram-count`` are queried the same way. Words are whatever units the text is split into; for shallow
fusion with a speech model they are the model's SentencePiece pieces.

    p(w | h) = P[h w]                       if the n-gram h w is in the table
             = bow[h] * p(w | h[1:])        otherwise (bow = 1 when h is not in the table)

Estimation (Chen & Goodman 1998, as in KenLM): adjusted counts a(g) are raw counts for the highest order and
for n-grams starting with <s>, otherwise the number of distinct words seen before g; three discounts per
order from the counts of counts; every order interpolated with the next lower one, and unigrams with the
uniform distribution over the vocabulary (so every known word, </s> and <unk> get probability > 0).
"""

from __future__ import annotations

import gzip
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from transduce.data.text import DataError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)
NO_PROB = -99.0  # ARPA's log10 "probability" of <s>, which is never predicted

Ngram = tuple[str, ...]


class NgramLM:
    """A back-off n-gram model: ``entries[ngram] = (log10 prob, log10 back-off)``."""

    def __init__(self, entries: dict[Ngram, tuple[float, float]], order: int) -> None:
        if (UNK,) not in entries:
            raise ValueError(f"n-gram model has no {UNK} unigram")
        self.entries, self.order = entries, order

    @property
    def vocab(self) -> list[str]:
        """Words with a unigram entry (including <s>, </s>, <unk>)."""
        return [g[0] for g in self.entries if len(g) == 1]

    def log10_prob(self, context: Sequence[str], word: str) -> float:
        """log10 p(word | context); only the last order-1 context words matter; unknown words score as <unk>."""
        context = tuple(context[len(context) - self.order + 1 :]) if self.order > 1 else ()
        if (word,) not in self.entries:
            word = UNK
        backoff = 0.0
        for start in range(len(context) + 1):  # longest context first
            ctx = context[start:]
            found = self.entries.get((*ctx, word))
            if found is not None:
                return backoff + found[0]
            stored = self.entries.get(ctx)
            backoff += stored[1] if stored is not None else 0.0
        raise AssertionError("unreachable: the unigram of every word is present")

    def log_prob(self, context: Sequence[str], word: str) -> float:
        """Natural-log p(word | context)."""
        return self.log10_prob(context, word) * LN10

    def sentence_log10_prob(self, words: Sequence[str]) -> float:
        """log10 p(words </s> | <s>)."""
        history, total = [BOS], 0.0
        for word in [*words, EOS]:
            total += self.log10_prob(history, word)
            history.append(word)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """Per-word perplexity over the sentences, </s> counted as a word (the SRILM/KenLM convention)."""
        total, count = 0.0, 0
        for words in sentences:
            total += self.sentence_log10_prob(words)
            count += len(words) + 1
        if count == 0:
            raise ValueError("perplexity of an empty corpus")
        return 10.0 ** (-total / count)

    def save_arpa(self, path: str | Path) -> None:
        """Write the ARPA text format (gzip when the name ends in .gz)."""
        by_order: list[list[Ngram]] = [[] for _ in range(self.order)]
        for ngram in self.entries:
            by_order[len(ngram) - 1].append(ngram)
        lines = ["", "\\data\\"] + [f"ngram {n + 1}={len(g)}" for n, g in enumerate(by_order)]
        for n, grams in enumerate(by_order, start=1):
            lines += ["", f"\\{n}-grams:"]
            for ngram in sorted(grams):
                prob, bow = self.entries[ngram]
                text = f"{prob:.7f}\t{' '.join(ngram)}"
                lines.append(text + (f"\t{bow:.7f}" if n < self.order else ""))
        lines += ["", "\\end\\", ""]
        data = "\n".join(lines).encode("utf-8")
        path = Path(path)
        path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)

    @classmethod
    def load_arpa(cls, path: str | Path) -> NgramLM:
        """Read an ARPA file (plain or .gz); errors name the file and line."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such language model file")
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        entries: dict[Ngram, tuple[float, float]] = {}
        declared: dict[int, int] = {}
        section = -1  # -1 before \data\, 0 in \data\, n in \n-grams:
        for number, line in enumerate(text.split("\n"), start=1):
            if section > 0 and line[:1] not in ("\\", ""):  # the hot path: one n-gram
                fields = line.split()
                if len(fields) not in (section + 1, section + 2):
                    if not fields:
                        continue
                    raise DataError(f"{path}:{number}: expected log-prob, {section} words and an optional back-off")
                try:
                    prob, bow = float(fields[0]), (float(fields[-1]) if len(fields) == section + 2 else 0.0)
                except ValueError:
                    bad = next(f for f in (fields[0], fields[-1]) if not _is_float(f))
                    raise DataError(f"{path}:{number}: expected a number, got {bad!r}") from None
                entries[tuple(fields[1 : section + 1])] = (prob, bow)
                continue
            line = line.strip()
            where = f"{path}:{number}"
            if not line:
                continue
            if line == "\\data\\":
                section = 0
            elif line == "\\end\\":
                break
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = _int(line[1:-7], where)
            elif section == 0 and line.startswith("ngram "):
                order_text, _, count_text = line[6:].partition("=")
                declared[_int(order_text, where)] = _int(count_text, where)
            elif section == -1:
                continue  # text before \data\ is allowed (comments)
            else:
                raise DataError(f"{where}: unexpected line {line[:40]!r}")
        if not declared:
            raise DataError(f"{path}: not an ARPA file (no \\data\\ section)")
        found = Counter(len(g) for g in entries)
        for n, want in declared.items():
            if found[n] != want:
                raise DataError(f"{path}: header declares {want} {n}-grams but the file has {found[n]}")
        if (UNK,) not in entries:  # KenLM always writes <unk>; other tools may not
            entries[(UNK,)] = (NO_PROB, 0.0)
        return cls(entries, max(declared))


def _int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: expected an integer, got {text!r}") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _discounts(adjusted: Iterable[int]) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the counts of counts (Chen & Goodman eq. 26);
    falls back to 0.5/1.0/1.5 when there is too little data for the estimate."""
    n = Counter(c for c in adjusted if c <= 4)  # n[k]: n-grams with adjusted count exactly k
    if min(n[1], n[2], n[3], n[4]) == 0:
        return 0.5, 1.0, 1.5
    y = n[1] / (n[1] + 2 * n[2])
    d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    return d if all(0 < dk < k for k, dk in enumerate(d, start=1)) else (0.5, 1.0, 1.5)


def _adjusted_counts(sentences: Iterable[Sequence[str]], order: int) -> list[dict[Ngram, int]]:
    """Per order n (index n-1): raw counts at the top order and for n-grams starting with <s>, continuation
    counts (distinct left neighbours) below."""
    raw: Counter[Ngram] = Counter()
    for words in sentences:
        seq = [BOS, *words, EOS]
        for end in range(1, len(seq)):
            for n in range(1, min(order, end + 1) + 1):
                raw[tuple(seq[end - n + 1 : end + 1])] += 1
    left: Counter[Ngram] = Counter(g[1:] for g in raw if len(g) > 1)
    adjusted: list[dict[Ngram, int]] = [{} for _ in range(order)]
    for g, c in raw.items():
        adjusted[len(g) - 1][g] = c if len(g) == order or g[0] == BOS else left[g]
    adjusted[0][(BOS,)] = 0  # <s> is a context, never a prediction
    return adjusted


def train_kneser_ney(sentences: Iterable[Sequence[str]], order: int, vocab: Iterable[str] = ()) -> NgramLM:
    """Interpolated modified Kneser-Ney model of the given order from tokenized sentences (no <s>/</s>).
    ``vocab`` adds words that get probability mass even if unseen (e.g. every piece a recognizer can emit)."""
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    adjusted = _adjusted_counts(sentences, order)
    words = {g[0] for g in adjusted[0]} | set(vocab) | {EOS, UNK}
    words.discard(BOS)
    entries: dict[Ngram, tuple[float, float]] = {}
    lower: dict[Ngram, float] = {(w,): 1.0 / len(words) for w in words}  # order-0: uniform, keyed by word
    for n in range(1, order + 1):
        counts = {g: c for g, c in adjusted[n - 1].items() if g[-1] != BOS}
        if n == 1:
            counts.update({(w,): 0 for w in words if (w,) not in counts})
        discount = _discounts(c for c in counts.values() if c > 0)
        total: defaultdict[Ngram, float] = defaultdict(float)
        mass: defaultdict[Ngram, float] = defaultdict(float)  # discounted mass per context
        for g, c in counts.items():
            total[g[:-1]] += c
            if c > 0:
                mass[g[:-1]] += discount[min(c, 3) - 1]
        gamma = {h: mass[h] / t for h, t in total.items() if t > 0}
        probs: dict[Ngram, float] = {}
        for g, c in counts.items():
            h = g[:-1]
            if total[h] == 0:
                continue
            own = (c - discount[min(c, 3) - 1]) / total[h] if c > 0 else 0.0
            probs[g] = own + gamma[h] * lower[g[1:] if n > 1 else g]
        for g, p in probs.items():
            entries[g] = (math.log10(p), 0.0)
        for h, weight in gamma.items():  # back-off weights live on the context's own entry
            if h:
                prob = entries[h][0] if h in entries else NO_PROB
                entries[h] = (prob, math.log10(weight) if weight > 0 else NO_PROB)
        lower = probs
    entries[(BOS,)] = (NO_PROB, entries.get((BOS,), (NO_PROB, 0.0))[1])
    return NgramLM(entries, order)
