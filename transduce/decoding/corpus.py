"""Decoding many sentences: length-sorted batches, results back in input order."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from transduce.config import DecodeConfig
from transduce.data.batching import pad
from transduce.data.tokenizer import EOS
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.decoding.hypothesis import Hypothesis, StepModel


def search_batch(model: StepModel, src_ids: list[list[int]], cfg: DecodeConfig,
                 device: torch.device) -> list[list[Hypothesis]]:
    """Search one batch of token-id lists (no specials); EOS is appended here."""
    seqs = [ids + [EOS] for ids in src_ids]
    src = pad(seqs).to(device)
    src_lens = torch.tensor([len(s) for s in seqs], device=device)
    if cfg.beam == 1 and cfg.nbest == 1:
        hyps = greedy_search(model, src, src_lens, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)
        return [[h] for h in hyps]
    return beam_search(
        model, src, src_lens, beam=cfg.beam, nbest=cfg.nbest, len_penalty=cfg.len_penalty,
        len_penalty_style=cfg.len_penalty_style, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b,
        coverage_penalty=cfg.coverage_penalty,
    )


def search_corpus(
    model: StepModel, src_ids: list[list[int]], cfg: DecodeConfig, *,
    device: torch.device | str = "cpu", bf16: bool = False, progress=None,
) -> list[list[Hypothesis]]:
    """Decode every sentence; empty inputs give an empty hypothesis without running the model."""
    device = torch.device(device)
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in src_ids]
    order = sorted((i for i, ids in enumerate(src_ids) if ids), key=lambda i: len(src_ids[i]))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.inference_mode(), autocast:
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            for i, hyps in zip(chunk, search_batch(model, [src_ids[i] for i in chunk], cfg, device), strict=False):
                results[i] = hyps
            if progress is not None:
                progress(len(chunk))
    return results
