"""The original pure-Python CTC prefix beam search, kept as the reference that ``CTCPrefixSearch`` (the fast one in
``transduce.decoding.ctc``) must match exactly: same hypotheses, scores and timestamps for every option. Tests and
``benchmarks/ctc_search.py`` run both side by side; nothing else uses it.

Dimension letters: T frames, V vocabulary (blank = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

from transduce.decoding.ctc import BLANK, NEG_INF, CTCHypothesis
from transduce.decoding.lm_fusion import LMFusion


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow (the search's hot spot: two arguments, no tuples)."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


@dataclass
class _Prefix:
    """Totals over alignments ending in blank (b) / in the last token (nb), plus the best (Viterbi)
    alignment of each kind with its token frames, for WeNet-style peak timestamps."""

    b: float = NEG_INF
    nb: float = NEG_INF
    vb: float = NEG_INF
    vnb: float = NEG_INF
    times_b: list[int] = field(default_factory=list)
    times_nb: list[int] = field(default_factory=list)
    peak: float = NEG_INF  # log-prob of the last token at its timestamp frame on the best nb path
    lm: float = 0.0  # shallow-fusion terms of this prefix (LMFusion.extend summed over its tokens)

    def score(self) -> float:
        return _logaddexp(self.b, self.nb)

    def fused(self) -> float:
        return self.score() + self.lm

    def viterbi(self) -> tuple[float, list[int]]:
        return (self.vb, self.times_b) if self.vb > self.vnb else (self.vnb, self.times_nb)


def _extend(nxt: _Prefix, total: float, viterbi: float, times: list[int], t: int, lp: float) -> None:
    """Add a new token at frame t to ``nxt``'s non-blank totals from a source with these scores."""
    nxt.nb = _logaddexp(nxt.nb, total)
    if viterbi > nxt.vnb:
        nxt.vnb, nxt.times_nb, nxt.peak = viterbi, [*times, t], lp


def _entry(nxt: dict[tuple[int, ...], _Prefix], prefix: tuple[int, ...], lm: float) -> _Prefix:
    """``nxt[prefix]``, created with fusion score ``lm`` if absent."""
    found = nxt.get(prefix)
    if found is None:
        found = nxt[prefix] = _Prefix(lm=lm)
    return found


def _candidates(frame: list[float], token_prune: int, prob_prune: float | None) -> list[int]:
    order = sorted(range(len(frame)), key=frame.__getitem__, reverse=True)
    if token_prune > 0:
        order = order[:token_prune]
    if prob_prune is not None:
        order = order[:1] + [v for v in order[1:] if frame[v] >= prob_prune]
    return order


class ReferencePrefixSearch:
    """The original pure-Python ``CTCPrefixSearch`` (same constructor, ``advance``, ``nbest``, same results),
    kept as the reference the fast search is tested and benchmarked against."""

    def __init__(self, beam: int = 10, token_prune: int = 0, prob_prune: float | None = None,
                 fusion: LMFusion | None = None) -> None:
        self.beam, self.token_prune, self.prob_prune, self.fusion = beam, token_prune, prob_prune, fusion
        self.beams: dict[tuple[int, ...], _Prefix] = {(): _Prefix(b=0.0, vb=0.0)}
        self.frames = 0  # frames consumed so far (timestamps count from the first)

    def advance(self, log_probs: Tensor) -> None:
        """Consume the next frames' log-probs (T, V)."""
        beams = self.beams
        for t, frame in enumerate(log_probs.tolist(), start=self.frames):
            nxt: dict[tuple[int, ...], _Prefix] = {}
            sources = [(prefix, cur, cur.score(), *cur.viterbi()) for prefix, cur in beams.items()]
            for token in _candidates(frame, self.token_prune, self.prob_prune):
                lp = frame[token]
                for prefix, cur, total, v, times in sources:
                    if token == BLANK:  # *  -> *-   (only source of this kind)
                        stay = _entry(nxt, prefix, cur.lm)
                        stay.b = _logaddexp(stay.b, total + lp)
                        stay.vb, stay.times_b = v + lp, times
                    elif prefix and token == prefix[-1]:
                        stay = _entry(nxt, prefix, cur.lm)  # *a -> *a  (repeat collapses)
                        stay.nb = _logaddexp(stay.nb, cur.nb + lp)
                        if cur.vnb + lp > stay.vnb:
                            stay.vnb = cur.vnb + lp
                            stay.times_nb, stay.peak = cur.times_nb, cur.peak
                            if lp > cur.peak:  # the token peaks later on this path
                                stay.times_nb, stay.peak = [*cur.times_nb[:-1], t], lp
                        longer = self._child(nxt, prefix, token, cur)
                        _extend(longer, cur.b + lp, cur.vb + lp, cur.times_b, t, lp)  # *a- -> *aa
                    else:
                        _extend(self._child(nxt, prefix, token, cur), total + lp, v + lp, times, t, lp)
            ranked = sorted(nxt.items(), key=lambda item: item[1].fused(), reverse=True)
            beams = dict(ranked[: self.beam])
        self.beams = beams
        self.frames += log_probs.size(0)

    def _child(self, nxt: dict[tuple[int, ...], _Prefix], prefix: tuple[int, ...], token: int,
               cur: _Prefix) -> _Prefix:
        """The entry for prefix + token in ``nxt``, created with its fusion score on first use."""
        key = (*prefix, token)
        if key in nxt:
            return nxt[key]
        return _entry(nxt, key, cur.lm + (self.fusion.extend(prefix, token) if self.fusion else 0.0))

    def nbest(self, n: int = 1, final: bool = False) -> list[CTCHypothesis]:
        """Up to ``n`` hypotheses over the frames so far, best first; ``final`` adds the fusion LM's
        end-of-sentence term (use it once the audio has ended)."""
        def total(prefix: tuple[int, ...], p: _Prefix) -> float:
            return p.fused() + (self.fusion.end(prefix) if final and self.fusion else 0.0)

        ranked = sorted(((total(*item), item) for item in self.beams.items()), key=lambda x: x[0], reverse=True)
        return [CTCHypothesis(list(prefix), score, list(p.viterbi()[1])) for score, (prefix, p) in ranked[:n]]
