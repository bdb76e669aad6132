"""Batched beam search over sentences and beams, with length penalty, GNMT coverage penalty and n-best.

Dimension letters: B sentences still searching, K beam size, N = B * K rows, V vocabulary,
S source (memory) length.
A sentence stops when it has K finished hypotheses (fairseq's rule); it then leaves the batch.
The coverage penalty only re-scores finished hypotheses (as in GNMT); it needs a model with
``step_with_attention`` and, when 0, the model's plain ``step`` runs as without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from transduce.data.tokenizer import BOS, EOS
from transduce.decoding.hypothesis import (
    Hypothesis,
    StepModel,
    gnmt_coverage_penalty,
    length_penalty,
    mask_specials,
    max_lengths,
)
from transduce.nn.masks import padding_mask


@dataclass
class Coverage:
    """Search state of the coverage penalty: each row's attention summed over its steps."""

    sums: Tensor
    """(N, S) attention weights summed over the steps taken (fp32)."""
    mask: Tensor
    """(N, S) True on real source (memory) positions."""
    beta: float
    """Coverage penalty weight."""

    def add(self, weights: Tensor) -> Coverage:
        return Coverage(self.sums + weights.float(), self.mask, self.beta)

    def reorder(self, indices: Tensor) -> Coverage:
        return Coverage(self.sums.index_select(0, indices), self.mask.index_select(0, indices), self.beta)

    def penalty(self, row: int) -> float:
        return float(gnmt_coverage_penalty(self.sums[row], self.mask[row], self.beta))


@torch.no_grad()
def beam_search(
    model: StepModel, src: Tensor, src_lens: Tensor, *, beam: int = 5, nbest: int = 1,
    len_penalty: float = 1.0, len_penalty_style: str = "fairseq",
    max_len_a: float = 1.2, max_len_b: int = 10, coverage_penalty: float = 0.0,
) -> list[list[Hypothesis]]:
    """src (B, S), src_lens (B,) -> for each sentence its ``nbest`` best hypotheses. A finished
    hypothesis scores log_prob / length_penalty + ``gnmt_coverage_penalty(.., coverage_penalty)``."""
    if nbest > beam:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")
    if coverage_penalty < 0:
        raise ValueError(f"coverage_penalty must be >= 0, got {coverage_penalty}")
    if coverage_penalty and not hasattr(model, "step_with_attention"):
        raise ValueError(f"coverage_penalty needs a model with step_with_attention; {type(model).__name__} has none")
    device, k = src.device, beam
    memory, memory_lens = model.encode(src, src_lens)
    batch = src.size(0)
    rows = torch.arange(batch, device=device).repeat_interleave(k)  # (N,)
    memory, memory_lens = memory[rows], memory_lens[rows]
    state = model.init_state(memory, memory_lens)
    limits = max_lengths(src_lens, max_len_a, max_len_b)
    active = torch.arange(batch, device=device)  # sentence ids still searching
    prefixes = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)  # (N, t+1)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive
    coverage = None
    if coverage_penalty:
        mask = padding_mask(memory_lens, memory.size(1))  # (N, S)
        coverage = Coverage(torch.zeros(mask.shape, device=device), mask, coverage_penalty)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while active.numel():
        if coverage is None:
            lp, state = model.step(prefixes[:, -1], memory, state)  # (N, V)
        else:
            lp, state, weights = model.step_with_attention(prefixes[:, -1], memory, state)  # type: ignore[attr-defined]
            coverage = coverage.add(weights)  # weights (N, S)
        n, vocab = active.numel(), lp.size(1)
        forced = (step >= limits[active]).repeat_interleave(k)
        lp = mask_specials(lp, forced)
        candidates = (scores[:, :, None] + lp.view(n, k, vocab)).view(n, k * vocab)
        top_scores, top_ids = candidates.topk(min(2 * k, k * vocab), dim=1)  # (n, 2K)
        top_beams, top_tokens = top_ids // vocab, top_ids % vocab
        is_eos = top_tokens == EOS
        # EOS among the first K candidates finishes a hypothesis.
        ends = (is_eos[:, :k] & top_scores[:, :k].isfinite()).nonzero().tolist()
        divisor = float(length_penalty(step + 1, len_penalty, len_penalty_style))
        for i, j in ends:
            sent = int(active[i])
            if len(finished[sent]) < k:
                row = i * k + int(top_beams[i, j])
                total = float(top_scores[i, j])
                score = total / divisor
                if coverage is not None:
                    score += coverage.penalty(row)
                finished[sent].append(Hypothesis(prefixes[row, 1:].tolist(), score, total))
        next_scores, order = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (n, K)
        next_beams, next_tokens = top_beams.gather(1, order), top_tokens.gather(1, order)
        done = torch.tensor([len(finished[int(s)]) >= k for s in active], device=device)
        done |= ~next_scores[:, 0].isfinite()
        keep = (~done).nonzero().squeeze(1)  # (B',)
        source_rows = (keep[:, None] * k + next_beams[keep]).reshape(-1)  # (B' K,)
        prefixes = torch.cat([prefixes[source_rows], next_tokens[keep].reshape(-1, 1)], dim=1)
        memory = memory[source_rows]
        state = state.reorder(source_rows)
        coverage = None if coverage is None else coverage.reorder(source_rows)
        scores, active = next_scores[keep], active[keep]
        step += 1
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]
