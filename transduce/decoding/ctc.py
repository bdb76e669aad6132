"""CTC searches over log-probabilities: greedy (best path) and prefix beam search.

Dimension letters: B batch, T frames, V vocabulary (blank = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from transduce.decoding.ctc_prefix_fast import BLANK, NEG_INF, Beams, advance
from transduce.decoding.lm_fusion import LMFusion

__all__ = ["BLANK", "NEG_INF", "CTCHypothesis", "CTCPrefixSearch", "ctc_beam_search", "ctc_greedy",
           "ctc_prefix_beam_search"]


@dataclass
class CTCHypothesis:
    """Token ids (blanks and repeats collapsed), a log-probability score and one frame index per token."""

    tokens: list[int]
    score: float
    timestamps: list[int]


def ctc_greedy(log_probs: Tensor, lengths: Tensor) -> list[CTCHypothesis]:
    """Best path: log_probs (B, T, V), lengths (B,) -> one hypothesis per row; score is the best path's
    log-probability, timestamps the first frame of each emitted token."""
    best, ids = log_probs.max(dim=-1)  # (B, T) each
    hyps = []
    for b, n in enumerate(lengths.tolist()):
        path = ids[b, :n].tolist()
        tokens, times = [], []
        for t, token in enumerate(path):
            if token != BLANK and (t == 0 or path[t - 1] != token):
                tokens.append(token)
                times.append(t)
        hyps.append(CTCHypothesis(tokens, float(best[b, :n].sum()), times))
    return hyps


class CTCPrefixSearch:
    """Prefix beam search carried across chunks of frames (streaming): ``advance`` with each chunk's
    log-probs (T, V), ``nbest`` at any time for partial or final hypotheses. Feeding the frames in any
    chunking gives the same result as one call on the whole utterance.

    score = log of the prefix's probability summed over all its alignments (exact when nothing is pruned
    and the beam holds every prefix). ``token_prune`` keeps the k likeliest tokens per frame (0 = all);
    ``prob_prune`` skips tokens whose log-prob is below it (the frame's best token is always kept).
    Timestamps: for each token, the frame where it peaks on the prefix's best alignment (WeNet).
    ``fusion`` adds a language model's weighted scores to the ranking (shallow fusion); hypothesis scores are
    then CTC + LM terms, the LM's end-of-sentence term included by ``nbest(final=True)``.

    The work per frame is in ``ctc_prefix_fast`` (numpy over prefixes x tokens, Python only for the survivors); it
    returns exactly what the original pure-Python search (``ctc_prefix_reference``) returns, which tests check.
    """

    def __init__(self, beam: int = 10, token_prune: int = 0, prob_prune: float | None = None,
                 fusion: LMFusion | None = None) -> None:
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.beam, self.token_prune, self.prob_prune, self.fusion = beam, token_prune, prob_prune, fusion
        self.beams = Beams.start()
        self.frames = 0  # frames consumed so far (timestamps count from the first)

    def advance(self, log_probs: Tensor) -> None:
        """Consume the next frames' log-probs (T, V)."""
        lp = log_probs.detach().cpu().double().numpy()  # (T, V), the same values as the floats of tolist()
        if lp.shape[0]:
            self.beams = advance(self.beams, lp, self.frames, self.beam, self.token_prune, self.prob_prune,
                                 self.fusion)
        self.frames += lp.shape[0]

    def nbest(self, n: int = 1, final: bool = False) -> list[CTCHypothesis]:
        """Up to ``n`` hypotheses over the frames so far, best first; ``final`` adds the fusion LM's
        end-of-sentence term (use it once the audio has ended)."""
        beams = self.beams
        scores = [beams.total(i) + beams.lm[i] + (self.fusion.end(prefix) if final and self.fusion else 0.0)
                  for i, prefix in enumerate(beams.prefixes)]
        ranked = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:n]
        return [CTCHypothesis(list(beams.prefixes[i]), scores[i], list(beams.viterbi(i)[1])) for i in ranked]


def ctc_prefix_beam_search(
    log_probs: Tensor, beam: int = 10, token_prune: int = 0, prob_prune: float | None = None, nbest: int = 1,
    fusion: LMFusion | None = None,
) -> list[CTCHypothesis]:
    """Prefix beam search (``CTCPrefixSearch``) on one utterance's log_probs (T, V) -> up to ``nbest``
    hypotheses, best first."""
    search = CTCPrefixSearch(beam, token_prune, prob_prune, fusion)
    search.advance(log_probs)
    return search.nbest(nbest, final=True)


def ctc_beam_search(
    log_probs: Tensor, lengths: Tensor, beam: int = 10, token_prune: int = 0,
    prob_prune: float | None = None, nbest: int = 1, fusion: LMFusion | None = None,
) -> list[list[CTCHypothesis]]:
    """Batched convenience: log_probs (B, T, V), lengths (B,) -> per row, ``ctc_prefix_beam_search``'s n-best."""
    return [
        ctc_prefix_beam_search(log_probs[b, :n], beam, token_prune, prob_prune, nbest, fusion)
        for b, n in enumerate(lengths.tolist())
    ]
