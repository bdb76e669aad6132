"""Several translation models with one vocabulary searched as one (fairseq's ``EnsembleModel``): each
step averages the models' next-token probabilities, ``log(mean_m p_m(y | prefix, x))``.

The ensemble is itself a ``StepModel``, so greedy and beam search, n-best and the coverage penalty run
unchanged. Memories of the members are concatenated on the feature axis, ``(B, S, D_1 + ... + D_M)``,
because searches index and reorder one memory tensor; every member keeps the source length S.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from transduce.data.tokenizer import UNK


@dataclass(frozen=True)
class EnsembleState:
    """One decoder state per member, reordered together."""

    states: tuple

    def reorder(self, indices: Tensor) -> EnsembleState:
        return EnsembleState(tuple(s.reorder(indices) for s in self.states))


class Ensemble(nn.Module):
    """``models`` (each with encode / init_state / step, same target vocabulary) -> one StepModel."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")
        self.members = nn.ModuleList(models)
        with torch.no_grad():  # each member's memory size D_m, from a one-token source
            probe = [m.encode(torch.full((1, 1), UNK, device=_device(m)), torch.tensor([1], device=_device(m)))[0]
                     for m in self._each()]
        self.memory_dims = tuple(p.size(-1) for p in probe)

    def _each(self) -> list[Any]:
        """The members, as the step models they are."""
        return list(self.members)

    def _split(self, memory: Tensor) -> tuple[Tensor, ...]:
        return memory.split(list(self.memory_dims), dim=-1)

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S), src_lens (B,) -> memory (B, S, sum D_m), memory_lens (B,)."""
        outputs = [m.encode(src, src_lens) for m in self._each()]
        lens = outputs[0][1]
        if any(out[0].shape[:2] != outputs[0][0].shape[:2] or not torch.equal(out[1], lens) for out in outputs):
            raise ValueError("ensemble members must keep the source length (their memories differ in length)")
        return torch.cat([out[0] for out in outputs], dim=-1), lens

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> EnsembleState:
        return EnsembleState(tuple(m.init_state(part, memory_lens)
                                   for m, part in zip(self._each(), self._split(memory), strict=True)))

    def step(self, tokens: Tensor, memory: Tensor, state: EnsembleState) -> tuple[Tensor, EnsembleState]:
        """tokens (N,) -> log of the averaged probabilities (N, V), next state."""
        results = [m.step(tokens, part, s)
                   for m, part, s in zip(self._each(), self._split(memory), state.states, strict=True)]
        return _mean_probs([lp for lp, _ in results]), EnsembleState(tuple(s for _, s in results))

    def step_with_attention(self, tokens: Tensor, memory: Tensor,
                            state: EnsembleState) -> tuple[Tensor, EnsembleState, Tensor]:
        """As ``step``, plus the members' cross-attention weights (N, S) averaged."""
        results = [m.step_with_attention(tokens, part, s)
                   for m, part, s in zip(self._each(), self._split(memory), state.states, strict=True)]
        weights = torch.stack([w for _, _, w in results]).mean(dim=0)
        return _mean_probs([lp for lp, _, _ in results]), EnsembleState(tuple(s for _, s, _ in results)), weights


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _mean_probs(log_probs: list[Tensor]) -> Tensor:
    """M tensors (N, V) of log-probabilities -> log of their mean probability (N, V)."""
    return torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
