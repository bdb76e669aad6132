"""The frame step of ``CTCPrefixSearch``: exact prefix beam search with the prefixes x tokens work in numpy.

The reference (``ctc_prefix_reference.ReferencePrefixSearch``) walks every candidate token of a frame for every kept
prefix in Python and sorts all P x C new entries. Here, per frame:

1. "stays" (a kept prefix extended by blank or by its own last token, plus the one new path merged into it from its
   parent prefix) are at most P entries, updated in Python with the reference's own float operations; when the
   beam-th best of them beats every possible child (most frames of a trained model: blank dominates), they are
   the new beam and steps 2-3 are skipped;
2. "children" (prefix + a new token) each get exactly one path, so their scores are one numpy sum over a (P, J)
   matrix: total (or the blank-ending total for a repeated token) + log-prob [+ LM terms];
3. the best ``beam`` entries are picked with numpy, ties broken by the order in which the reference would have
   created the entries (its dict order), so even exactly equal scores rank as they did;
4. only the survivors get their timestamps and token tuples built, in Python.

Without fusion, a prefix's children rank by token log-prob alone, so only the frame's first beam + P candidate tokens
can survive (at most P of a prefix's children are merged or repeats): the rest are never looked at. Candidate tokens
(sorted, pruned) come from one argsort per chunk. Scores are the reference's bit for bit: every sum is the same IEEE
addition and every log-add-exp the same scalar function, and a stay never merges more than two paths, whose
log-add-exp is symmetric.

Dimension letters: T frames, V vocabulary (blank = 0), P kept prefixes, J candidate tokens of a frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from transduce.decoding.lm_fusion import LMFusion

BLANK = 0
NEG_INF = float("-inf")
Prefix = tuple[int, ...]
_Row = tuple[Prefix, float, float, float, float, list[int], list[int], float, float, float]  # a Beams entry


def logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow, the reference's operations exactly (symmetric in a and b)."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


@dataclass
class Beams:
    """The kept prefixes, best first, as parallel per-prefix lists: totals over alignments ending in blank (b) /
    in the last token (nb), the best alignment of each kind (vb, vnb) with its token frames, the log-prob of the
    last token at its timestamp on the best nb path (peak), the fusion terms (lm) and, with fusion, a (P, V) cache
    of ``LMFusion.extend(prefix, v)`` (NaN where not asked yet)."""

    prefixes: list[Prefix]
    b: list[float]
    nb: list[float]
    vb: list[float]
    vnb: list[float]
    times_b: list[list[int]]
    times_nb: list[list[int]]
    peak: list[float]
    lm: list[float]
    totals: list[float]  # logaddexp(b, nb): the prefix's CTC score
    ext: np.ndarray | None = None  # (P, V) float64

    @staticmethod
    def start() -> Beams:
        """Before the first frame: the empty prefix, certain."""
        return Beams([()], [0.0], [NEG_INF], [0.0], [NEG_INF], [[]], [[]], [NEG_INF], [0.0], [0.0])

    @staticmethod
    def of(rows: list[_Row]) -> Beams:
        """Beams from one row per prefix, best first."""
        if not rows:
            return Beams([], [], [], [], [], [], [], [], [], [])
        prefixes, b, nb, vb, vnb, times_b, times_nb, peak, lm, totals = map(list, zip(*rows, strict=True))
        return Beams(prefixes, b, nb, vb, vnb, times_b, times_nb, peak, lm, totals)

    def total(self, i: int) -> float:
        return self.totals[i]

    def viterbi(self, i: int) -> tuple[float, list[int]]:
        """The best alignment's log-prob and token frames (blank-ending on ties lost to nb, as the reference)."""
        return (self.vb[i], self.times_b[i]) if self.vb[i] > self.vnb[i] else (self.vnb[i], self.times_nb[i])


def frame_candidates(lp: np.ndarray, token_prune: int, prob_prune: float | None) -> tuple[np.ndarray, np.ndarray,
                                                                                              list[int]]:
    """Log-probs (T, V) -> tokens by falling log-prob, ties by id (T, V); each token's place in that order (T, V);
    and per frame the count of candidates, which are always the first ones in that order: the ``token_prune``
    likeliest (0 = all), then those with log-prob >= ``prob_prune`` (the best is always kept)."""
    frames, vocab = lp.shape
    order = np.argsort(-lp, axis=1, kind="stable")  # (T, V)
    rank = np.empty_like(order)
    rank[np.arange(frames)[:, None], order] = np.arange(vocab)  # (T, V)
    count = np.full(frames, min(token_prune, vocab) if token_prune > 0 else vocab)  # (T,)
    if prob_prune is not None:
        count = np.minimum(count, np.maximum((lp >= prob_prune).sum(axis=1), 1))
    return order, rank, count.tolist()


@dataclass
class _Frame:
    """One frame's inputs: log-probs (V,), candidate order (V,) and places (V,), candidate count, frame index."""

    lp: np.ndarray
    order: np.ndarray
    rank: np.ndarray
    count: int
    t: int
    blank_ok: bool = field(init=False)
    blank_lp: float = field(init=False)

    def __post_init__(self) -> None:
        self.blank_ok, self.blank_lp = int(self.rank[BLANK]) < self.count, float(self.lp[BLANK])


@dataclass(slots=True)
class _Stay:
    """A kept prefix's entry after the frame: its totals, creation order key and fused score."""

    q: int
    b: float
    nb: float
    key: int
    fused: float
    total: float  # logaddexp(b, nb)
    token_lp: float | None  # log-prob of the prefix's last token in this frame, None when not a candidate


class _Layout:
    """Per-frame facts about the kept prefixes: totals, last tokens, parents' places (-1 when not kept)."""

    def __init__(self, beams: Beams) -> None:
        self.size = len(beams.prefixes)
        self.total = beams.totals
        index = {prefix: i for i, prefix in enumerate(beams.prefixes)}
        self.last = [prefix[-1] if prefix else -1 for prefix in beams.prefixes]
        self.parent = [index.get(prefix[:-1], -1) if prefix else -1 for prefix in beams.prefixes]

    def key(self, rank: int, source: int, second: bool) -> int:
        """The reference's creation order: candidate token place, then source prefix, then (a repeated token)
        the prefix's own entry before the longer one."""
        return (rank * self.size + source) * 2 + int(second)


def _stays(beams: Beams, layout: _Layout, frame: _Frame) -> list[_Stay]:
    """Each kept prefix's own entry: blank (b), its last token repeated (nb), the path from its kept parent (nb).
    Creation keys as ``_Layout.key``, inlined: this loop runs for every prefix of every frame."""
    blank_ok, lp0, size = frame.blank_ok, frame.blank_lp, layout.size
    blank_key = int(frame.rank[BLANK]) * size * 2 if blank_ok else 1 << 62  # + 2q: this prefix's blank entry
    last = np.array(layout.last)  # (P,) -1 for the empty prefix
    token_lps, ranks = frame.lp[last].tolist(), frame.rank[last].tolist()  # (P,) each
    totals, nbs, bs, lms, parents, lasts = layout.total, beams.nb, beams.b, beams.lm, layout.parent, layout.last
    stays = []
    for q in range(size):
        rank = ranks[q]
        token_lp = token_lps[q] if lasts[q] >= 0 and rank < frame.count else None  # None: not a candidate
        if not blank_ok and token_lp is None:
            continue
        b = totals[q] + lp0 if blank_ok else NEG_INF
        nb, key = NEG_INF, blank_key + 2 * q
        if token_lp is not None:
            nb = nbs[q] + token_lp
            key = min(key, (rank * size + q) * 2)
            par = parents[q]
            if par >= 0:
                longer = lasts[par] == lasts[q]
                nb = logaddexp(nb, (bs[par] if longer else totals[par]) + token_lp)
                key = min(key, (rank * size + par) * 2 + longer)
        total = logaddexp(b, nb)
        stays.append(_Stay(q, b, nb, key, total + lms[q], total, token_lp))
    return stays


@dataclass
class _Children:
    """New prefixes: candidate tokens (J,), CTC scores (P, J), fused scores (P, J), existence (P, J) (False where
    the prefix is a kept one: merged into its stay) and creation keys (P, J)."""

    tokens: np.ndarray
    ctc: np.ndarray
    fused: np.ndarray
    exists: np.ndarray
    keys: np.ndarray


def _fusion_terms(beams: Beams, tokens: np.ndarray, fusion: LMFusion, vocab: int) -> np.ndarray:
    """``fusion.extend(prefix, token)`` (P, J), asking the LM only for pairs not cached in ``beams.ext``."""
    if beams.ext is None:
        beams.ext = np.full((len(beams.prefixes), vocab), np.nan)
    ext = beams.ext
    for p, j in zip(*np.nonzero(np.isnan(ext[:, tokens])), strict=True):
        ext[p, tokens[j]] = fusion.extend(beams.prefixes[p], int(tokens[j]))
    return ext[:, tokens]  # (P, J)


def _children(beams: Beams, layout: _Layout, frame: _Frame, width: int, fusion: LMFusion | None) -> _Children:
    """Every kept prefix extended by every candidate token that could survive (see the module docstring)."""
    size = layout.size
    tokens = frame.order[: frame.count if fusion is not None else min(frame.count, width + size + 1)]
    tokens = tokens[tokens != BLANK]  # (J,)
    last = np.array(layout.last)  # (P,)
    repeat = tokens[None, :] == last[:, None]  # (P, J) the prefix's last token again: only after a blank
    base = np.where(repeat, np.array(beams.b)[:, None], np.array(layout.total)[:, None])  # (P, J)
    ctc = base + frame.lp[tokens]  # (P, J)
    fused = ctc
    if fusion is not None:
        fused = ctc + (np.array(beams.lm)[:, None] + _fusion_terms(beams, tokens, fusion, frame.lp.size))
    exists = np.ones(ctc.shape, dtype=bool)
    for q in range(size):
        if layout.parent[q] >= 0:
            exists[layout.parent[q], tokens == layout.last[q]] = False  # merged into q's own entry
    sources = np.arange(size)[:, None]  # (P, 1)
    keys = (frame.rank[tokens][None, :] * size + sources) * 2 + repeat  # (P, J)
    return _Children(tokens, ctc, fused, exists, keys)


def _select(stays: list[_Stay], children: _Children, width: int) -> np.ndarray:
    """The best ``width`` entries, best first, as flat indices: i < len(stays) a stay, else a child (P * J)."""
    fused = np.concatenate([np.array([s.fused for s in stays]), children.fused.ravel()])
    keys = np.concatenate([np.array([s.key for s in stays], dtype=np.int64), children.keys.ravel()])
    alive = np.concatenate([np.ones(len(stays), dtype=bool), children.exists.ravel()])
    index = np.flatnonzero(alive)
    if index.size > width:
        values = fused[index]
        kth = -np.partition(-values, width - 1)[width - 1]  # the width-th best score
        above, tied = np.flatnonzero(values > kth), np.flatnonzero(values == kth)
        tied = tied[np.argsort(keys[index[tied]], kind="stable")[: width - above.size]]
        index = index[np.concatenate([above, tied])]
    return index[np.lexsort((keys[index], -fused[index]))]


def _only_stays(stays: list[_Stay], beams: Beams, layout: _Layout, frame: _Frame, width: int,
                fusion: LMFusion | None) -> list[_Stay] | None:
    """The survivors when no child can make the beam (the usual blank frame), else None."""
    if fusion is not None or len(stays) < width:
        return None
    best = sorted(stays, key=lambda s: (-s.fused, s.key))[:width]
    nonblank = frame.order[: frame.count]
    nonblank = nonblank[nonblank != BLANK]
    if nonblank.size and best[-1].fused <= max(layout.total) + float(frame.lp[nonblank[0]]):
        return None
    return best


def _stay_entry(beams: Beams, layout: _Layout, frame: _Frame, stay: _Stay) -> _Row:
    """Kept prefix ``stay.q`` after the frame, with its best alignments (the reference's update order)."""
    q, t = stay.q, frame.t
    v, times = beams.viterbi(q)
    vb, times_b = (v + frame.blank_lp, times) if frame.blank_ok else (NEG_INF, [])
    vnb, times_nb, peak = NEG_INF, [], NEG_INF
    token, lp = layout.last[q], stay.token_lp
    if lp is not None:
        par = layout.parent[q]
        sources = sorted([q, par]) if par >= 0 else [q]  # the reference visits kept prefixes in order
        for source in sources:
            if source == q and beams.vnb[q] + lp > vnb:  # *a -> *a
                vnb, times_nb, peak = beams.vnb[q] + lp, beams.times_nb[q], beams.peak[q]
                if lp > beams.peak[q]:  # the token peaks later on this path
                    times_nb, peak = [*beams.times_nb[q][:-1], t], lp
            elif source == par:  # parent -> parent + a
                longer = layout.last[par] == token
                pv, ptimes = (beams.vb[par], beams.times_b[par]) if longer else beams.viterbi(par)
                if pv + lp > vnb:
                    vnb, times_nb, peak = pv + lp, [*ptimes, t], lp
    return beams.prefixes[q], stay.b, stay.nb, vb, vnb, times_b, times_nb, peak, beams.lm[q], stay.total


def _child_entry(beams: Beams, layout: _Layout, frame: _Frame, children: _Children, p: int, j: int) -> _Row:
    """The new prefix: kept prefix ``p`` + candidate token ``j`` (one path: its CTC score as is)."""
    token = int(children.tokens[j])
    lp = float(frame.lp[token])
    repeat = token == layout.last[p]
    v, times = (beams.vb[p], beams.times_b[p]) if repeat else beams.viterbi(p)
    vnb, times_nb, peak = (v + lp, [*times, frame.t], lp) if v + lp > NEG_INF else (NEG_INF, [], NEG_INF)
    lm = beams.lm[p] + float(beams.ext[p, token]) if beams.ext is not None else beams.lm[p]
    nb = float(children.ctc[p, j])  # also its total: logaddexp(-inf, nb) == nb
    return (*beams.prefixes[p], token), NEG_INF, nb, NEG_INF, vnb, [], times_nb, peak, lm, nb


def step(beams: Beams, frame: _Frame, width: int, fusion: LMFusion | None) -> Beams:
    """The kept prefixes after one more frame (the reference's ``advance`` body for one frame)."""
    layout = _Layout(beams)
    stays = _stays(beams, layout, frame)
    if (kept := _only_stays(stays, beams, layout, frame, width, fusion)) is not None:
        return Beams.of([_stay_entry(beams, layout, frame, stay) for stay in kept])
    children = _children(beams, layout, frame, width, fusion)
    rows: list[_Row] = []
    sources: list[int] = []  # the kept prefix each new one continues (-1: a child, new)
    for i in _select(stays, children, width).tolist():
        if i < len(stays):
            rows.append(_stay_entry(beams, layout, frame, stays[i]))
            sources.append(stays[i].q)
        else:
            p, j = divmod(i - len(stays), children.tokens.size)
            rows.append(_child_entry(beams, layout, frame, children, p, j))
            sources.append(-1)
    new = Beams.of(rows)
    if beams.ext is not None:
        new.ext = beams.ext[sources]  # (P', V) the kept prefixes' cached LM terms
        new.ext[np.array(sources) < 0] = np.nan
    return new


def advance(beams: Beams, lp: np.ndarray, first: int, width: int, token_prune: int, prob_prune: float | None,
            fusion: LMFusion | None) -> Beams:
    """``beams`` after the frames' log-probs (T, V) float64, the first of them being frame ``first``."""
    order, rank, count = frame_candidates(lp, token_prune, prob_prune)
    for t in range(lp.shape[0]):
        beams = step(beams, _Frame(lp[t], order[t], rank[t], count[t], first + t), width, fusion)
    return beams
