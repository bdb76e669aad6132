"""Beam search whose first decoder input is a per-sentence tag instead of BOS (multilingual decoders: ``<2de>``),
and whose output never contains a tag: the one-tag case of :mod:`transduce.decoding.prefix`.

Dimension letters: B sentences, S memory length, D memory size, L never-emitted ids.
"""

from __future__ import annotations

from torch import Tensor

from transduce.decoding.hypothesis import Hypothesis, StepModel
from transduce.decoding.prefix import prefix_beam_search


def tagged_beam_search(
    model: StepModel, memory: Tensor, memory_lens: Tensor, tags: Tensor, forbidden: Tensor, limits: Tensor, *,
    beam: int = 5, nbest: int = 1, len_penalty: float = 1.0, len_penalty_style: str = "fairseq",
) -> list[list[Hypothesis]]:
    """Encoder output memory (B, S, D) and lengths (B,), first inputs tags (B,), never-emitted ids forbidden (L,),
    output limits (B,) -> each sentence's ``nbest`` best hypotheses (tokens without tag and EOS)."""
    return prefix_beam_search(model, memory, memory_lens, tags[:, None], forbidden, limits, beam=beam, nbest=nbest,
                              len_penalty=len_penalty, len_penalty_style=len_penalty_style)
