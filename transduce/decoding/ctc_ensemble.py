"""Ensembles of CTC models that need not share units: pool the n-best lists of every model and rank each
candidate text by the sum of the models' CTC log-likelihoods of it.

Frame-level posterior averaging needs the same vocabulary and frame rate in every model; scoring whole texts
does not, so a character model, a word model and a streaming hybrid can vote together. Each model turns a
candidate text into its own token ids; ``log p(y | x)`` sums over all of that model's alignments of y
(``F.ctc_loss``), so the ranking is exact for the candidates, and only the candidate list comes from beam
searches. Dimensions: T: frames of one model, V: its vocabulary, N: candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from transduce.data.batching import pad


def ctc_log_likelihoods(log_probs: Tensor, candidates: Sequence[Sequence[int]], blank: int = 0) -> Tensor:
    """(T, V) CTC log-probs of one utterance, N token-id sequences -> (N,) log p(sequence | utterance).

    An empty sequence is scored as all blanks; a sequence that cannot fit in T frames (repeats need a blank
    between them) gets -inf.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {tuple(log_probs.shape)}")
    if not candidates:
        return log_probs.new_zeros(0)
    count, frames = len(candidates), log_probs.size(0)
    if frames == 0:  # audio shorter than one output frame: only the empty text fits, with probability 1
        return torch.tensor([0.0 if len(c) == 0 else -math.inf for c in candidates])
    targets = pad(candidates, blank)  # (N, longest); width 0 when every candidate is empty
    expanded = log_probs.float()[:, None, :].expand(frames, count, log_probs.size(1))  # (T, N, V)
    loss = F.ctc_loss(expanded, targets, torch.full((count,), frames, dtype=torch.long),
                      torch.tensor([len(c) for c in candidates], dtype=torch.long), blank=blank,
                      reduction="none", zero_infinity=False)
    return -loss


def rank_candidates(texts: Sequence[str], scores_per_model: Sequence[Tensor]) -> list[tuple[str, float]]:
    """Candidate texts and each model's (N,) log-likelihoods -> (text, sum over models) pairs, best first.

    Ties keep the order of ``texts`` (the pooled n-best order).
    """
    total = torch.zeros(len(texts), dtype=torch.float64)
    for scores in scores_per_model:
        if scores.shape != (len(texts),):
            raise ValueError(f"scores must be ({len(texts)},), got shape {tuple(scores.shape)}")
        total += scores.double()
    order = sorted(range(len(texts)), key=lambda i: -float(total[i]))
    return [(texts[i], float(total[i])) for i in order]
