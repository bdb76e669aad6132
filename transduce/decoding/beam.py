"""Batched beam search over sentences and beams, with length penalty and n-best.

Dimension letters: B sentences still searching, K beam size, N = B * K rows, V vocabulary.
A sentence stops when it has K finished hypotheses (fairseq's rule); it then leaves the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from transduce.data.tokenizer import BOS, EOS
from transduce.decoding.hypothesis import Hypothesis, StepModel, length_penalty, mask_specials, max_lengths


@torch.no_grad()
def beam_search(
    model: StepModel, src: Tensor, src_lens: Tensor, *, beam: int = 5, nbest: int = 1,
    len_penalty: float = 1.0, len_penalty_style: str = "fairseq",
    max_len_a: float = 1.2, max_len_b: int = 10,
) -> list[list[Hypothesis]]:
    """src (B, S), src_lens (B,) -> for each sentence its ``nbest`` best hypotheses."""
    if nbest > beam:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")
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
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while active.numel():
        lp, state = model.step(prefixes[:, -1], memory, state)  # (N, V)
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
                finished[sent].append(Hypothesis(prefixes[row, 1:].tolist(), total / divisor, total))
        next_scores, order = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (n, K)
        next_beams, next_tokens = top_beams.gather(1, order), top_tokens.gather(1, order)
        done = torch.tensor([len(finished[int(s)]) >= k for s in active], device=device)
        done |= ~next_scores[:, 0].isfinite()
        keep = (~done).nonzero().squeeze(1)  # (B',)
        source_rows = (keep[:, None] * k + next_beams[keep]).reshape(-1)  # (B' K,)
        prefixes = torch.cat([prefixes[source_rows], next_tokens[keep].reshape(-1, 1)], dim=1)
        memory = memory[source_rows]
        state = state.reorder(source_rows)
        scores, active = next_scores[keep], active[keep]
        step += 1
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]
