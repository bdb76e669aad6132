"""CTC prefix scores (Watanabe et al. 2017, Algorithm 2; ESPnet ``CTCPrefixScoreTH``) for joint
CTC/attention decoding, vectorized over hypotheses and candidate tokens.

Dimension letters: B utterances, T frames, V vocabulary (blank = PAD = 0), N hypotheses (rows),
C candidate tokens per row.

For a prefix g and frame t, r^n_t(g) / r^b_t(g) are the log-probabilities that frames 0..t collapse
to g with frame t emitting g's last token / blank. With
    phi_{t-1}(g, c) = r^b_{t-1}(g) + r^n_{t-1}(g)   (r^n left out when c is g's last token: a repeat
                                                     needs a blank in between; phi_{-1} = 1 for g empty)
the prefix score of h = g + c is
    psi(h) = sum_t phi_{t-1}(g, c) x_t(c),
the probability of every alignment whose collapsed output starts with h (t: the frame where h's last
token is first emitted). The candidate c = EOS instead scores the whole utterance,
psi(g + EOS) = r^n_{T-1}(g) + r^b_{T-1}(g) = p(collapse == g), with T-1 the utterance's last frame.
All sums above are taken in log space; frames at or beyond an utterance's length never contribute.

Example: g = (a,), candidates (a, b, EOS) -> log p(a a ...), log p(a b ...), log p(a | x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from transduce.data.tokenizer import EOS, PAD

BLANK = PAD
NEG_INF = float("-inf")


@dataclass
class CTCPrefixState:
    """Forward variables of each row's current prefix."""

    r_n: Tensor
    """(T, N) log r^n_t: frames 0..t give the prefix, frame t emits its last token."""
    r_b: Tensor
    """(T, N) log r^b_t: frames 0..t give the prefix, frame t emits blank."""
    score: Tensor
    """(N,) log psi of the prefix (0 for the empty prefix)."""
    last: Tensor
    """(N,) the prefix's last token (blank when empty)."""
    length: Tensor
    """(N,) tokens in the prefix."""
    utt: Tensor
    """(N,) the utterance (row of the scorer's log-probs) each hypothesis reads."""

    def reorder(self, indices: Tensor) -> CTCPrefixState:
        """Keep rows ``indices`` (N',) in that order (duplicates allowed)."""
        return CTCPrefixState(
            self.r_n[:, indices], self.r_b[:, indices], self.score[indices],
            self.last[indices], self.length[indices], self.utt[indices],
        )


@dataclass
class CTCPrefixCandidates:
    """Every scored extension h = prefix + c of every row, from which the search keeps a few."""

    r_n: Tensor
    """(T, N, C) log r^n_t(h)."""
    r_b: Tensor
    """(T, N, C) log r^b_t(h)."""
    scores: Tensor
    """(N, C) log psi(h); for c = EOS the full-sequence log p(prefix | x)."""
    tokens: Tensor
    """(N, C) the candidate tokens c."""
    parent: CTCPrefixState
    """The rows' prefixes before extension."""

    def select(self, rows: Tensor, cols: Tensor) -> CTCPrefixState:
        """rows (M,), cols (M,) -> state of the M prefixes prefix[rows[i]] + tokens[rows[i], cols[i]].
        Do not select EOS candidates: they end a hypothesis."""
        return CTCPrefixState(
            self.r_n[:, rows, cols], self.r_b[:, rows, cols], self.scores[rows, cols],
            self.tokens[rows, cols], self.parent.length[rows] + 1, self.parent.utt[rows],
        )


class CTCPrefixScorer:
    """Holds the (read-only) CTC outputs; prefix state is passed in and returned.

    log_probs (B, T, V) CTC log-posteriors, lengths (B,) valid frames per utterance (>= 1); frames at
    or beyond a length may hold anything (even NaN) and are ignored.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor) -> None:
        if lengths.numel() and int(lengths.min()) < 1:
            raise ValueError("CTC prefix scoring needs at least one frame per utterance")
        self.log_probs = log_probs.float()  # (B, T, V)
        self.lengths = lengths.to(log_probs.device)  # (B,)
        self.blank = self.log_probs[:, :, BLANK].T.contiguous()  # (T, B)

    def _valid(self, utt: Tensor) -> Tensor:
        """utt (N,) -> (T, N) True on frames inside each row's utterance."""
        frames = torch.arange(self.log_probs.size(1), device=utt.device)
        return frames[:, None] < self.lengths[utt][None, :]

    def init_state(self, utt: Tensor) -> CTCPrefixState:
        """Empty prefixes for rows reading utterances ``utt`` (N,): r^n = -inf, r^b_t = sum of blank
        log-probs over frames 0..t."""
        blank = self.blank[:, utt].masked_fill(~self._valid(utt), 0.0)  # (T, N), padding made harmless
        zeros = torch.zeros_like(utt)
        return CTCPrefixState(
            torch.full_like(blank, NEG_INF), blank.cumsum(0), torch.zeros_like(blank[0]),
            zeros + BLANK, zeros, utt,
        )

    def score(self, state: CTCPrefixState, candidates: Tensor) -> tuple[Tensor, CTCPrefixCandidates]:
        """candidates (N, C) token ids (never blank) -> log psi(prefix + c) (N, C) and the extended
        prefixes' forward variables. EOS entries hold log p(prefix | x)."""
        n, c = candidates.shape
        x = self.log_probs[state.utt[:, None], :, candidates].permute(2, 0, 1)  # (N, C, T) -> (T, N, C)
        blank = self.blank[:, state.utt, None]  # (T, N, 1)
        repeat = (candidates == state.last[:, None])[None]  # (1, N, C)
        phi = torch.logaddexp(state.r_b[:, :, None], torch.where(repeat, NEG_INF, state.r_n[:, :, None]))
        start = torch.where(state.length == 0, 0.0, NEG_INF).to(phi)  # (N,) phi_{-1}
        phi_prev = torch.cat([start[None, :, None].expand(1, n, c), phi[:-1]])  # (T, N, C): phi_{t-1}
        valid = self._valid(state.utt)[:, :, None]  # (T, N, 1)
        psi = (phi_prev + x).masked_fill(~valid, NEG_INF).logsumexp(0)  # (N, C)
        last_frame = (self.lengths[state.utt] - 1)[None]  # (1, N)
        full = torch.logaddexp(state.r_n, state.r_b).gather(0, last_frame)[0]  # (N,)
        psi = torch.where(candidates == EOS, full[:, None], psi)
        r_n, r_b = _forward(phi_prev, x, blank, int(state.length.min()) if n else 0)
        return psi, CTCPrefixCandidates(r_n, r_b, psi, candidates, state)


def _forward(phi_prev: Tensor, x: Tensor, blank: Tensor, start: int) -> tuple[Tensor, Tensor]:
    """Recursion over frames for h = g + c: phi_prev (T, N, C), x (T, N, C) log x_t(c), blank (T, N, 1)
    -> r^n, r^b (T, N, C). Both are -inf before frame ``start`` (no row's prefix is shorter than
    ``start`` tokens, and h needs start + 1 frames), so the loop begins there."""
    r_n = torch.full_like(x, NEG_INF)
    r_b = torch.full_like(x, NEG_INF)
    if start == 0:
        r_n[0] = phi_prev[0] + x[0]
    for t in range(max(start, 1), x.size(0)):
        r_n[t] = torch.logaddexp(r_n[t - 1], phi_prev[t]) + x[t]
        r_b[t] = torch.logaddexp(r_b[t - 1], r_n[t - 1]) + blank[t]
    return r_n, r_b
