"""Hybrid CTC/attention decoding for speech recognition: joint beam search (Watanabe et al. 2017,
ESPnet) and n-best attention rescoring (WeNet).

Dimension letters: B utterances (still searching), K beam size, N = B * K rows, P candidates per row
(pre-beam), V vocabulary, S memory length, D model size, T CTC frames, H hypotheses, L tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.decoding.beam_loop import Candidates, beam_loop, check_beam
from transduce.decoding.ctc_prefix_score import CTCPrefixCandidates, CTCPrefixScorer, CTCPrefixState
from transduce.decoding.hypothesis import Hypothesis

NEG_INF = float("-inf")


class AttentionDecoder(Protocol):
    """An attention decoder over encoder memory (``TransformerDecoder``)."""

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> Any: ...

    def step(self, tokens: Tensor, memory: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def __call__(self, tgt_in: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor: ...


def _candidates(lp: Tensor, width: int, ctc_weight: float) -> Tensor:
    """lp (N, V) masked attention log-probs -> candidate tokens (N, P) to score with CTC: the ``width``
    best by attention (ESPnet's pre-beam), or every token when CTC alone decides or V is small."""
    n, vocab = lp.shape
    if ctc_weight == 1.0 or width >= vocab:
        return torch.arange(vocab, device=lp.device).expand(n, vocab)
    return lp.topk(width, dim=1).indices


def _step_scores(
    lp: Tensor, tokens: Tensor, scorer: CTCPrefixScorer, state: CTCPrefixState, ctc_weight: float
) -> tuple[Tensor, CTCPrefixCandidates | None]:
    """Combined score of each candidate (N, P): (1 - w) log p_att(c) + w (log psi(g + c) - log psi(g))."""
    att = lp.gather(1, tokens)  # (N, P)
    if ctc_weight == 0.0:
        return att, None
    psi, extended = scorer.score(state, tokens)
    delta = torch.where(psi.isneginf(), NEG_INF, psi - state.score[:, None])  # no -inf - -inf = NaN
    if ctc_weight < 1.0:
        att = (1.0 - ctc_weight) * att
    return att + ctc_weight * delta, extended  # at w = 1, att is 0 or -inf (forbidden tokens)


@dataclass
class JointState:
    """The beam rows' state in a joint search."""

    memory: Tensor
    """(N, S, D) each row's encoder output."""
    decoder: Any
    """The attention decoder's incremental state (it owns ``reorder``)."""
    ctc: CTCPrefixState
    """CTC forward variables of each row's prefix."""
    extended: CTCPrefixCandidates | None = None
    """This step's CTC-scored extensions, until the beam picks among them (None: CTC not used)."""


class JointScorer:
    """A ``BeamScorer`` adding CTC prefix scores to an attention decoder's: each row's candidates are its
    ``width`` best tokens by attention (every token when CTC alone decides), scored
    (1 - ctc_weight) log p_att(c) + ctc_weight (log psi(g + c) - log psi(g)).

    memory (B, S, D), memory_lens (B,) the encoder output; ``ctc`` holds the CTC log-posteriors (B, T, V)."""

    def __init__(self, decoder: AttentionDecoder, memory: Tensor, memory_lens: Tensor, ctc: CTCPrefixScorer, *,
                 ctc_weight: float, width: int) -> None:
        self.decoder, self.memory, self.memory_lens, self.ctc = decoder, memory, memory_lens, ctc
        self.ctc_weight, self.width = ctc_weight, width

    def init(self, rows: Tensor) -> JointState:
        memory = self.memory[rows]  # (N, S, D)
        decoder = self.decoder.init_state(memory, self.memory_lens[rows])
        return JointState(memory, decoder, self.ctc.init_state(rows.to(self.ctc.log_probs.device)))

    def score(self, tokens: Tensor, state: JointState) -> tuple[Tensor, JointState]:
        if self.ctc_weight == 1.0:  # the decoder is not run
            return torch.zeros(tokens.size(0), self.ctc.log_probs.size(-1), device=tokens.device), state
        lp, decoder = self.decoder.step(tokens, state.memory, state.decoder)  # (N, V)
        return lp, JointState(state.memory, decoder, state.ctc)

    def candidates(self, log_probs: Tensor, state: JointState) -> tuple[Candidates, JointState]:
        tokens = _candidates(log_probs, self.width, self.ctc_weight)  # (N, P)
        scores, extended = _step_scores(log_probs, tokens, self.ctc, state.ctc, self.ctc_weight)
        return Candidates(scores, tokens), JointState(state.memory, state.decoder, state.ctc, extended)

    def select(self, state: JointState, rows: Tensor, columns: Tensor) -> JointState:
        ctc = state.ctc if state.extended is None else state.extended.select(rows, columns)
        return JointState(state.memory[rows], state.decoder.reorder(rows), ctc)

    def finish_score(self, state: JointState, row: int) -> float:
        return 0.0


@torch.no_grad()
def joint_beam_search(
    decoder: AttentionDecoder, memory: Tensor, memory_lens: Tensor, ctc_log_probs: Tensor, ctc_lens: Tensor,
    *, beam: int, ctc_weight: float, len_penalty: float = 0.0, len_penalty_style: str = "fairseq",
    max_len: int | Tensor | None = None, nbest: int = 1, pre_beam: int | None = None,
) -> list[list[Hypothesis]]:
    """Attention beam search rescored on the fly by CTC prefix scores, batched over utterances and beams.

    memory (B, S, D), memory_lens (B,) encoder output; ctc_log_probs (B, T, V), ctc_lens (B,) CTC
    log-posteriors over the decoder's vocabulary. A candidate's score adds
    (1 - ctc_weight) * attention log-prob + ctc_weight * (CTC prefix score of the extended prefix minus
    that of the prefix), so a finished hypothesis y totals
    (1 - ctc_weight) * log p_att(y, EOS) + ctc_weight * log p_ctc(y | x).
    Each row's CTC work is limited to ``pre_beam`` candidates (default max(1.5 K, K + 1)) picked by
    attention; with ctc_weight 1 the decoder is not run and every token is scored by CTC (ESPnet).
    Stops like ``beam_search`` (fairseq rules, ``beam_loop``); output lengths are capped at ``max_len``
    (an int or a (B,) tensor, default the CTC lengths T'). Returns per utterance its ``nbest`` best, with
    ``log_prob`` the combined total and ``score`` = total / length_penalty(len + 1) as in beam.py.
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    check_beam(beam, nbest)
    width = pre_beam if pre_beam is not None else max(int(1.5 * beam), beam + 1)
    scorer = JointScorer(decoder, memory, memory_lens, CTCPrefixScorer(ctc_log_probs, ctc_lens),
                         ctc_weight=ctc_weight, width=width)
    batch = memory.size(0)
    limits = (ctc_lens if max_len is None else torch.as_tensor(max_len).expand(batch)).to(memory.device)  # (B,)
    return beam_loop(scorer, limits, beam=beam, nbest=nbest, len_penalty=len_penalty,
                     len_penalty_style=len_penalty_style)


def sequence_log_probs(decoder: AttentionDecoder, memory: Tensor, memory_lens: Tensor, hyps: list[list[int]]) -> Tensor:
    """Teacher forcing in one batch: memory (H, S, D), memory_lens (H,), H token lists (no BOS/EOS) ->
    (H,) summed log p(tokens + EOS), feeding BOS + tokens; padding positions are ignored."""
    device = memory.device
    lens = torch.tensor([len(h) + 1 for h in hyps], device=device)  # (H,) with EOS
    tgt_in = pad_sequence([torch.tensor([BOS, *h]) for h in hyps], batch_first=True, padding_value=PAD)
    target = pad_sequence([torch.tensor([*h, EOS]) for h in hyps], batch_first=True, padding_value=PAD)
    tgt_in, target = tgt_in.to(device), target.to(device)  # (H, L+1) each
    lp = decoder(tgt_in, memory, memory_lens).float().log_softmax(-1)  # (H, L+1, V)
    picked = lp.gather(2, target[:, :, None])[:, :, 0]  # (H, L+1)
    inside = torch.arange(target.size(1), device=device)[None, :] < lens[:, None]  # (H, L+1)
    return picked.masked_fill(~inside, 0.0).sum(1)


@torch.no_grad()
def attention_rescore(
    decoder: AttentionDecoder, memory: Tensor, memory_lens: Tensor, nbest: list[list[list[int]]],
    ctc_scores: list[list[float]], *, ctc_weight: float = 0.5,
    reverse_decoder: AttentionDecoder | None = None, reverse_weight: float = 0.0,
) -> list[tuple[int, float]]:
    """WeNet's attention rescoring of CTC n-best lists.

    memory (B, S, D), memory_lens (B,); nbest[b] the token lists of utterance b (non-empty list; a
    hypothesis may be empty), ctc_scores[b] their CTC log-probs. All hypotheses of all utterances go
    through the decoder in one batch. attention = (1 - reverse_weight) * log p_l2r(y, EOS)
    + reverse_weight * log p_r2l(reversed y, EOS) (l2r alone without ``reverse_decoder``);
    total = attention + ctc_weight * ctc. Returns per utterance (index of the best hypothesis, its total).
    """
    if len(nbest) != memory.size(0) or [len(h) for h in nbest] != [len(s) for s in ctc_scores]:
        raise ValueError("nbest and ctc_scores must give one list per utterance, one score per hypothesis")
    if any(not hyps for hyps in nbest):
        raise ValueError("every utterance needs at least one hypothesis to rescore")
    if reverse_decoder is None and reverse_weight != 0.0:
        raise ValueError("reverse_weight needs a reverse_decoder")
    rows = torch.tensor([b for b, hyps in enumerate(nbest) for _ in hyps], device=memory.device)  # (H,)
    flat = [h for hyps in nbest for h in hyps]
    memory, memory_lens = memory[rows], memory_lens[rows]
    att = sequence_log_probs(decoder, memory, memory_lens, flat)  # (H,)
    if reverse_decoder is not None:
        r2l = sequence_log_probs(reverse_decoder, memory, memory_lens, [h[::-1] for h in flat])
        att = (1.0 - reverse_weight) * att + reverse_weight * r2l
    ctc = torch.tensor([s for scores in ctc_scores for s in scores], device=memory.device)
    totals = (att + ctc_weight * ctc).split([len(hyps) for hyps in nbest])
    return [(int(t.argmax()), float(t.max())) for t in totals]
