"""Hybrid CTC/attention decoding for speech recognition: joint beam search (Watanabe et al. 2017,
ESPnet) and n-best attention rescoring (WeNet).

Dimension letters: B utterances (still searching), K beam size, N = B * K rows, P candidates per row
(pre-beam), V vocabulary, S memory length, D model size, T CTC frames, H hypotheses, L tokens.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.decoding.ctc_prefix_score import CTCPrefixCandidates, CTCPrefixScorer, CTCPrefixState
from transduce.decoding.hypothesis import Hypothesis, length_penalty, mask_specials

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
    Stops like ``beam_search`` (fairseq rules); output lengths are capped at ``max_len`` (an int or
    a (B,) tensor, default the CTC lengths T'). Returns per utterance its ``nbest`` best, with
    ``log_prob`` the combined total and ``score`` = total / length_penalty(len + 1) as in beam.py.
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if nbest > beam:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")
    device, k, batch = memory.device, beam, memory.size(0)
    width = pre_beam if pre_beam is not None else max(int(1.5 * beam), beam + 1)
    rows = torch.arange(batch, device=device).repeat_interleave(k)  # (N,)
    memory = memory[rows]
    state = decoder.init_state(memory, memory_lens[rows])
    scorer = CTCPrefixScorer(ctc_log_probs, ctc_lens)
    ctc_state = scorer.init_state(rows.to(ctc_log_probs.device))
    limits = (ctc_lens if max_len is None else torch.as_tensor(max_len).expand(batch)).to(device)
    active = torch.arange(batch, device=device)  # utterance ids still searching
    prefixes = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)  # (N, t+1)
    scores = torch.full((batch, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while active.numel():
        n = active.numel()
        if ctc_weight < 1.0:
            lp, state = decoder.step(prefixes[:, -1], memory, state)  # (N, V)
        else:
            lp = torch.zeros(n * k, ctc_log_probs.size(-1), device=device)
        lp = mask_specials(lp, (step >= limits[active]).repeat_interleave(k))
        tokens = _candidates(lp, width, ctc_weight)  # (N, P)
        step_scores, extended = _step_scores(lp, tokens, scorer, ctc_state, ctc_weight)
        p = tokens.size(1)
        totals = (scores[:, :, None] + step_scores.view(n, k, p)).view(n, k * p)
        top_scores, top_ids = totals.topk(min(2 * k, k * p), dim=1)  # (n, 2K)
        top_beams, top_tokens = top_ids // p, tokens.reshape(n, k * p).gather(1, top_ids)
        is_eos = top_tokens == EOS
        _finish(finished, active, prefixes, top_scores, top_beams, is_eos, k,
                float(length_penalty(step + 1, len_penalty, len_penalty_style)))
        next_scores, order = top_scores.masked_fill(is_eos, NEG_INF).topk(k, dim=1)  # (n, K)
        next_ids = top_ids.gather(1, order)
        done = torch.tensor([len(finished[int(u)]) >= k for u in active], device=device)
        done |= ~next_scores[:, 0].isfinite()
        keep = (~done).nonzero().squeeze(1)  # (B',)
        source_rows = (keep[:, None] * k + next_ids[keep] // p).reshape(-1)  # (B' K,)
        next_tokens = top_tokens.gather(1, order)[keep].reshape(-1, 1)  # (B' K, 1)
        prefixes = torch.cat([prefixes[source_rows], next_tokens], dim=1)
        memory, state = memory[source_rows], state.reorder(source_rows)
        if extended is not None:
            ctc_state = extended.select(source_rows, (next_ids[keep] % p).reshape(-1))
        scores, active = next_scores[keep], active[keep]
        step += 1
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _finish(
    finished: list[list[Hypothesis]], active: Tensor, prefixes: Tensor, top_scores: Tensor,
    top_beams: Tensor, is_eos: Tensor, k: int, divisor: float,
) -> None:
    """EOS among an utterance's first K candidates (n, 2K) finishes that hypothesis, until K are done."""
    ends = (is_eos[:, :k] & top_scores[:, :k].isfinite()).nonzero().tolist()
    for i, j in ends:
        utt = int(active[i])
        if len(finished[utt]) < k:
            row = i * k + int(top_beams[i, j])
            total = float(top_scores[i, j])
            finished[utt].append(Hypothesis(prefixes[row, 1:].tolist(), total / divisor, total))


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
