"""Batched greedy search through the model's incremental ``step``."""

from __future__ import annotations

import torch
from torch import Tensor

from transduce.data.tokenizer import BOS, EOS
from transduce.decoding.hypothesis import Hypothesis, StepModel, mask_specials, max_lengths


@torch.no_grad()
def greedy_search(
    model: StepModel, src: Tensor, src_lens: Tensor, *, max_len_a: float = 1.2, max_len_b: int = 10,
) -> list[Hypothesis]:
    """src (B, S), src_lens (B,) -> one hypothesis per sentence. Finished rows leave the batch."""
    memory, memory_lens = model.encode(src, src_lens)
    state = model.init_state(memory, memory_lens)
    limits = max_lengths(src_lens, max_len_a, max_len_b)
    batch = src.size(0)
    active = torch.arange(batch, device=src.device)  # sentence id of each row
    tokens = torch.full((batch,), BOS, dtype=torch.long, device=src.device)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    log_probs = [0.0] * batch
    step = 0
    while active.numel():
        lp, state = model.step(tokens, memory, state)  # (N, V)
        lp = mask_specials(lp, step >= limits[active])
        best, tokens = lp.max(dim=-1)
        done = tokens == EOS
        for row, (sent, tok, score) in enumerate(zip(active.tolist(), tokens.tolist(), best.tolist(), strict=False)):
            log_probs[sent] += score
            if not done[row]:
                outputs[sent].append(tok)
        step += 1
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            active, tokens, memory = active[keep], tokens[keep], memory[keep]
            state = state.reorder(keep)
    return [Hypothesis(out, lp / (len(out) + 1), lp) for out, lp in zip(outputs, log_probs, strict=False)]
