"""N-best reranking with other models' forced-decoding scores.

The classic use is right-to-left reranking (Liu et al. 2016; Sennrich et al. 2016, WMT): a
left-to-right search proposes the beam's n-best, a model trained on reversed targets
(``data.reverse_target``) scores each proposal in the other direction, and the list is re-sorted by

    (1 - weight) * own score + weight * sum over rerankers r of share_r * log p_r(y | x) / length_penalty(|y| + 1)

where ``own score`` is the search's length-normalized score and the shares (``decode.rerank_weights``,
equal by default) sum to 1. Each reranker sees the proposals in its own token ids, so they need not share
the searcher's vocabulary. A reranker that translates the other way (a target-to-source "channel" model,
Yee et al. 2019) scores ``log p(x | y)`` instead: the proposal is its source and the sentence its
target; ``|y|`` is then the sentence's length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from transduce.data.batching import collate
from transduce.data.tokenizer import PAD
from transduce.decoding.hypothesis import Hypothesis, length_penalty


@torch.no_grad()
def sequence_log_probs(model: torch.nn.Module, src_ids: list[list[int]], tgt_ids: list[list[int]], *,
                       batch_size: int = 64, device: torch.device | str = "cpu") -> list[float]:
    """Teacher forcing: ``sum_t log p(y_t | y_<t, x)`` over each target and its EOS, for id lists without
    specials (``tgt_ids[i]`` given ``src_ids[i]``); the same sum beam search accumulates step by step.
    An empty list is a source of EOS alone (a channel model reads an empty hypothesis so)."""
    scores = [0.0] * len(src_ids)
    order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]), len(tgt_ids[i])))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate(chunk, src_ids, tgt_ids).to(device)  # EOS ends sources, BOS/EOS wrap targets
        log_probs = model(batch.src, batch.src_lens, batch.tgt_in).float().log_softmax(dim=-1)  # (B, T, V)
        picked = log_probs.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)  # (B, T)
        sums = picked.masked_fill(batch.tgt_out == PAD, 0.0).sum(dim=1)  # (B,)
        for i, total in zip(chunk, sums.tolist(), strict=True):
            scores[i] = total
    return scores


def rerank_shares(count: int, weights: Sequence[float] = ()) -> list[float]:
    """Each of ``count`` rerankers' share of the rerankers' part: ``weights`` rescaled to sum 1, or equal
    shares when it is empty."""
    if not weights:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ValueError(f"decode.rerank_weights has {len(weights)} weights for {count} rerankers")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"decode.rerank_weights must be >= 0 and not all 0, got {list(weights)}")
    return [w / sum(weights) for w in weights]


def rerank_nbest(nbest: list[list[Hypothesis]], other: list[list[list[float]]], lengths: list[list[list[int]]],
                 *, weight: float, len_penalty: float, len_penalty_style: str, keep: int,
                 shares: Sequence[float] = ()) -> list[list[Hypothesis]]:
    """Re-sort each sentence's hypotheses. ``other[r][i][j]`` is reranker r's summed log-prob of hypothesis
    j of sentence i and ``lengths[r][i][j]`` its length in that reranker's tokens (EOS not counted);
    ``shares``: the rerankers' relative weights (``rerank_shares``; empty = equal). The returned
    hypotheses carry the combined score (``log_prob`` stays the searcher's); ``keep`` per sentence."""
    share = rerank_shares(len(other), shares)
    out = []
    for i, hyps in enumerate(nbest):
        rescored = []
        for j, hyp in enumerate(hyps):
            theirs = sum(share[r] * scores[i][j] / length_penalty(lengths[r][i][j] + 1, len_penalty, len_penalty_style)
                         for r, scores in enumerate(other))
            combined = (1 - weight) * hyp.score + weight * theirs
            rescored.append(Hypothesis(hyp.tokens, float(combined), hyp.log_prob))
        out.append(sorted(rescored, key=lambda h: -h.score)[:keep])
    return out
