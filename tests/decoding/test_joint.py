"""Hybrid CTC/attention decoding against references run inside the tests: the vectorized CTC prefix
scorer vs brute force over all alignments, joint search vs ``beam_search`` (ctc_weight 0) and vs
``F.ctc_loss`` (ctc_weight 1), attention rescoring vs step-by-step decoding, batched vs one at a time."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from testkit import ctc_label_log_probs

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.decoding.beam import beam_search
from transduce.decoding.ctc_prefix_score import CTCPrefixScorer, CTCPrefixState
from transduce.decoding.joint import attention_rescore, joint_beam_search, sequence_log_probs
from transduce.models.transformer import TransformerConfig, build

V = 6  # PAD (= blank), UNK, BOS, EOS and two ordinary tokens
WORDS = [t for t in range(V) if t not in (PAD, BOS, EOS)]  # UNK may be produced
NEG_INF = float("-inf")


# ---------------------------------------------------------------- CTC prefix scorer vs brute force


def brute_prefix_score(labels, prefix, token):
    """EOS: log P(collapse == prefix); else log P(collapse starts with prefix + token)."""
    if token == EOS:
        return labels.get(prefix, NEG_INF)
    h = (*prefix, token)
    hits = [s for label, s in labels.items() if label[: len(h)] == h]
    return torch.tensor(hits).logsumexp(0).item() if hits else NEG_INF


def cat_states(states):
    """Rows of several states, one after the other (test helper)."""
    return CTCPrefixState(
        *(torch.cat([getattr(s, name) for s in states], dim=1) for name in ("r_n", "r_b")),
        *(torch.cat([getattr(s, name) for s in states]) for name in ("score", "last", "length", "utt")),
    )


@pytest.mark.parametrize("seed", range(3))
def test_prefix_scorer_equals_brute_force(seed):
    """Every prefix over {1, 2} up to 3 tokens, on 4 utterances of lengths 5, 3, 1, 4 in one batch
    (NaN padding must not leak), candidates 1, 2 and EOS (= 3, also a CTC label here)."""
    vocab, lengths = 4, [5, 3, 1, 4]
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.full((len(lengths), max(lengths), vocab), float("nan"))
    for b, n in enumerate(lengths):
        log_probs[b, :n] = (2 * torch.randn(n, vocab, generator=g)).log_softmax(-1)
    labels = [ctc_label_log_probs(log_probs[b, :n]) for b, n in enumerate(lengths)]
    prefixes = list(itertools.product([1, 2], repeat=3))
    pairs = list(itertools.product(range(len(lengths)), prefixes))  # (utterance, prefix) per row
    scorer = CTCPrefixScorer(log_probs, torch.tensor(lengths))
    state = scorer.init_state(torch.tensor([b for b, _ in pairs]))
    candidates = torch.tensor([1, 2, EOS]).expand(len(pairs), 3)
    states = []
    for step in range(4):
        states.append(state)
        got, extended = scorer.score(state, candidates)
        want = torch.tensor([
            [brute_prefix_score(labels[b], prefix[:step], c) for c in candidates[0].tolist()] for b, prefix in pairs
        ])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if step < 3:
            cols = torch.tensor([prefix[step] - 1 for _, prefix in pairs])  # column of token 1 / 2
            state = extended.select(torch.arange(len(pairs)), cols)
            torch.testing.assert_close(state.score, got[torch.arange(len(pairs)), cols])

    # Rows whose prefixes have different lengths in one batch: row i takes its prefix at step i % 4.
    rows = len(pairs)
    mixed = cat_states(states).reorder(torch.tensor([(i % 4) * rows + i for i in range(rows)]))
    got, _ = scorer.score(mixed, candidates)
    want = torch.tensor([
        [brute_prefix_score(labels[b], prefix[: i % 4], c) for c in candidates[0].tolist()]
        for i, (b, prefix) in enumerate(pairs)
    ])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- tiny attention decoder and inputs


def _decoder(seed=0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1, dropout=0.0)
    decoder = build(cfg, V, V).decoder.eval()
    with torch.no_grad():  # sharper distributions (tied: embeddings too): fewer near-ties
        decoder.output.weight.mul_(3.0)
    return decoder


def _inputs(memory_lens, ctc_lens, seed=1, sharp=2.0):
    """Random memory (B, S, 16) and CTC log-probs (B, T, V) with BOS/EOS impossible, padded with noise."""
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(len(memory_lens), max(memory_lens), 16, generator=g)
    logits = sharp * torch.randn(len(ctc_lens), max(ctc_lens), V, generator=g)
    logits[:, :, [BOS, EOS]] = NEG_INF
    return memory, torch.tensor(memory_lens), logits.log_softmax(-1), torch.tensor(ctc_lens)


class FixedMemory:
    """A ``StepModel`` for ``beam_search`` whose encoder output is given."""

    def __init__(self, decoder, memory, memory_lens):
        self.decoder, self.memory, self.memory_lens = decoder, memory, memory_lens

    def encode(self, src, src_lens):
        return self.memory, self.memory_lens

    def init_state(self, memory, memory_lens):
        return self.decoder.init_state(memory, memory_lens)

    def step(self, tokens, memory, state):
        return self.decoder.step(tokens, memory, state)


def stepwise_log_prob(decoder, memory, memory_len, tokens):
    """log p(tokens + EOS) by ``decoder.step`` on one utterance's unpadded memory (S, D)."""
    memory, lens = memory[None, :memory_len], torch.tensor([memory_len])
    state, prev, total = decoder.init_state(memory, lens), BOS, 0.0
    with torch.no_grad():
        for token in [*tokens, EOS]:
            lp, state = decoder.step(torch.tensor([prev]), memory, state)
            total, prev = total + lp[0, token].item(), token
    return total


def ctc_log_prob(log_probs, tokens):
    """log p_ctc(tokens | x) for one utterance's log_probs (T, V), by ``F.ctc_loss``."""
    loss = F.ctc_loss(
        log_probs[:, None], torch.tensor([tokens], dtype=torch.long), torch.tensor([log_probs.size(0)]),
        torch.tensor([len(tokens)]), blank=PAD, reduction="sum",
    )
    return -loss.item()


def assert_same_hyps(got, want):
    assert [h.tokens for h in got] == [h.tokens for h in want]
    for a, b in zip(got, want, strict=True):
        assert math.isclose(a.score, b.score, rel_tol=1e-5, abs_tol=1e-5)
        assert math.isclose(a.log_prob, b.log_prob, rel_tol=1e-5, abs_tol=1e-5)


# ---------------------------------------------------------------- joint beam search


@pytest.mark.parametrize(("beam", "alpha"), [(1, 0.0), (3, 1.0), (4, 0.0)])
def test_ctc_weight_zero_equals_beam_search(beam, alpha):
    """Pure attention: same hypotheses and scores as ``beam_search`` with the length limit = CTC length."""
    decoder = _decoder()
    memory, memory_lens, ctc, ctc_lens = _inputs([5, 3, 4], [6, 3, 5])
    model = FixedMemory(decoder, memory, memory_lens)
    src = torch.zeros(3, 1, dtype=torch.long)
    want = beam_search(model, src, ctc_lens, beam=beam, nbest=beam, len_penalty=alpha, max_len_a=1.0, max_len_b=0)
    got = joint_beam_search(decoder, memory, memory_lens, ctc, ctc_lens, beam=beam, ctc_weight=0.0,
                            len_penalty=alpha, nbest=beam)
    for g, w in zip(got, want, strict=True):
        assert_same_hyps(g, w)


def test_ctc_weight_one_ranks_by_ctc_probability():
    """CTC alone with a beam holding every prefix: the n-best is every possible output (at most T'
    tokens, over WORDS) ranked by its CTC probability, computed by ``F.ctc_loss``."""
    memory, memory_lens, ctc, ctc_lens = _inputs([2, 3], [4, 3], seed=2)
    got = joint_beam_search(_decoder(), memory, memory_lens, ctc, ctc_lens, beam=128, ctc_weight=1.0, nbest=128)
    for b, hyps in enumerate(got):
        outputs = [list(y) for n in range(int(ctc_lens[b]) + 1) for y in itertools.product(WORDS, repeat=n)]
        exact = {tuple(y): ctc_log_prob(ctc[b, : ctc_lens[b]], y) for y in outputs}
        ranked = sorted((s, y) for y, s in exact.items() if s > NEG_INF)[::-1]
        assert [h.tokens for h in hyps] == [list(y) for _, y in ranked]
        for h in hyps:
            assert math.isclose(h.log_prob, exact[tuple(h.tokens)], rel_tol=1e-5, abs_tol=1e-5)
            assert h.score == h.log_prob  # no length penalty


def test_ctc_weight_one_small_beam_finds_peaky_ctc_path():
    path = [4, 0, 4, 1, 1, 0, 5, 0]  # -> 4 4 1 5
    probs = torch.full((1, len(path), V), 0.04)
    probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.8
    memory, memory_lens, _, _ = _inputs([3], [1])
    got = joint_beam_search(_decoder(), memory, memory_lens, probs.log(), torch.tensor([len(path)]),
                            beam=2, ctc_weight=1.0)
    assert got[0][0].tokens == [4, 4, 1, 5]


def test_joint_scores_combine_attention_and_ctc():
    """A finished hypothesis totals (1 - w) log p_att(y, EOS) + w log p_ctc(y | x) (deltas telescope)."""
    decoder, w, alpha = _decoder(), 0.3, 1.0
    memory, memory_lens, ctc, ctc_lens = _inputs([5, 3], [6, 4])
    got = joint_beam_search(decoder, memory, memory_lens, ctc, ctc_lens, beam=3, ctc_weight=w,
                            len_penalty=alpha, nbest=3)
    for b, hyps in enumerate(got):
        assert len(hyps) == 3 and all(x.score >= y.score for x, y in itertools.pairwise(hyps))
        for h in hyps:
            att = stepwise_log_prob(decoder, memory[b], int(memory_lens[b]), h.tokens)
            want = (1 - w) * att + w * ctc_log_prob(ctc[b, : ctc_lens[b]], h.tokens)
            assert math.isclose(h.log_prob, want, rel_tol=1e-4, abs_tol=1e-4)
            assert math.isclose(h.score, h.log_prob / (len(h.tokens) + 1) ** alpha, rel_tol=1e-6)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5, 1.0])
def test_joint_batched_equals_one_at_a_time(ctc_weight):
    decoder = _decoder()
    mem_lens, ctc_lens = [5, 2, 4], [6, 3, 5]
    memory, memory_lens, ctc, ctc_len_t = _inputs(mem_lens, ctc_lens, seed=3)
    batched = joint_beam_search(decoder, memory, memory_lens, ctc, ctc_len_t, beam=3, ctc_weight=ctc_weight,
                                nbest=2, len_penalty=0.5)
    for b in range(3):
        alone = joint_beam_search(
            decoder, memory[b : b + 1, : mem_lens[b]], memory_lens[b : b + 1], ctc[b : b + 1, : ctc_lens[b]],
            ctc_len_t[b : b + 1], beam=3, ctc_weight=ctc_weight, nbest=2, len_penalty=0.5,
        )[0]
        assert_same_hyps(batched[b], alone)


# ---------------------------------------------------------------- attention rescoring

NBEST = [[[4, 5, 4], [4, 5], [], [1, 5, 5, 4]], [[5], [5, 5], [4, 1]]]
CTC_SCORES = [[-1.0, -1.5, -4.0, -2.0], [-0.5, -3.0, -1.2]]


def test_sequence_log_probs_equal_stepwise_decoding():
    decoder = _decoder()
    memory, memory_lens, _, _ = _inputs([5, 3, 5, 4], [1, 1, 1, 1])
    hyps = [[4, 5, 4], [], [1, 5, 5, 4], [5]]
    got = sequence_log_probs(decoder, memory, memory_lens, hyps)
    want = [stepwise_log_prob(decoder, memory[i], int(memory_lens[i]), h) for i, h in enumerate(hyps)]
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("ctc_weight", "reverse_weight"), [(0.0, 0.0), (0.5, 0.0), (0.5, 0.3), (2.0, 1.0)])
def test_attention_rescore_picks_best_stepwise_total(ctc_weight, reverse_weight):
    decoder, reverse = _decoder(0), _decoder(7)
    memory, memory_lens, _, _ = _inputs([5, 3], [1, 1])
    got = attention_rescore(decoder, memory, memory_lens, NBEST, CTC_SCORES, ctc_weight=ctc_weight,
                            reverse_decoder=reverse if reverse_weight else None, reverse_weight=reverse_weight)
    for b, (hyps, ctc_scores) in enumerate(zip(NBEST, CTC_SCORES, strict=True)):
        totals = []
        for h, c in zip(hyps, ctc_scores, strict=True):
            l2r = stepwise_log_prob(decoder, memory[b], int(memory_lens[b]), h)
            r2l = stepwise_log_prob(reverse, memory[b], int(memory_lens[b]), h[::-1])
            totals.append((1 - reverse_weight) * l2r + reverse_weight * r2l + ctc_weight * c)
        best = max(range(len(hyps)), key=totals.__getitem__)
        assert got[b][0] == best
        assert math.isclose(got[b][1], totals[best], rel_tol=1e-5, abs_tol=1e-5)


def test_attention_rescore_batched_equals_one_at_a_time():
    decoder, reverse = _decoder(0), _decoder(7)
    memory, memory_lens, _, _ = _inputs([5, 3], [1, 1], seed=4)
    batched = attention_rescore(decoder, memory, memory_lens, NBEST, CTC_SCORES, reverse_decoder=reverse,
                                reverse_weight=0.3)
    for b in range(2):
        n = int(memory_lens[b])
        alone = attention_rescore(decoder, memory[b : b + 1, :n], memory_lens[b : b + 1], NBEST[b : b + 1],
                                  CTC_SCORES[b : b + 1], reverse_decoder=reverse, reverse_weight=0.3)[0]
        assert alone[0] == batched[b][0]
        assert math.isclose(alone[1], batched[b][1], rel_tol=1e-5, abs_tol=1e-5)
