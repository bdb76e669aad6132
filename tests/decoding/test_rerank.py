"""N-best reranking: forced-decoding sums against beam search's own sums, and the combined score."""

import pytest
import torch

from transduce.data.tokenizer import EOS
from transduce.decoding.beam import beam_search
from transduce.decoding.hypothesis import Hypothesis, length_penalty
from transduce.decoding.rerank import rerank_nbest, rerank_shares, sequence_log_probs
from transduce.models.transformer import TransformerConfig, build

V = 9


def _model(seed: int):
    torch.manual_seed(seed)
    cfg = TransformerConfig(dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2, dropout=0.0,
                            max_positions=32)
    return build(cfg, V, V).eval()


def test_sequence_log_probs_equal_the_sums_beam_search_accumulates() -> None:
    model = _model(0)
    sources = [[4, 5, 6, 7], [8], [5, 5, 6]]
    src = torch.tensor([[*s, EOS] + [0] * (4 - len(s)) for s in sources])
    hyps = beam_search(model, src, torch.tensor([len(s) + 1 for s in sources]), beam=4, nbest=4,
                       len_penalty=0.0, len_penalty_style="fairseq", max_len_a=1.0, max_len_b=3)
    flat_src = [sources[i] for i, row in enumerate(hyps) for _ in row]
    flat_tgt = [h.tokens for row in hyps for h in row]
    got = sequence_log_probs(model, flat_src, flat_tgt, batch_size=5)  # batches mix lengths
    want = [h.log_prob for row in hyps for h in row]
    assert len(set(map(tuple, flat_tgt))) > 3  # distinct outputs of several lengths
    assert got == pytest.approx(want, abs=1e-4)
    empty, short = sequence_log_probs(model, [[], [4]], [[5], [5]])  # empty source: EOS alone
    assert empty < 0.0 and empty != pytest.approx(short)


def test_rerank_nbest_combines_normalized_scores_and_reorders() -> None:
    hyps = [[Hypothesis([4, 5], -1.0, -3.0), Hypothesis([4], -1.5, -3.0)], [Hypothesis([6], -0.2, -0.4)]]
    other = [[[-12.0, -2.0], [-1.0]]]  # one reranker: it prefers sentence 0's second hypothesis
    lengths = [[[2, 1], [3]]]
    out = rerank_nbest(hyps, other, lengths, weight=0.5, len_penalty=1.0, len_penalty_style="fairseq", keep=2)
    assert [h.tokens for h in out[0]] == [[4], [4, 5]]
    assert out[0][0].score == pytest.approx(0.5 * -1.5 + 0.5 * -2.0 / 2)
    assert out[0][0].log_prob == -3.0  # the searcher's own sum is kept
    assert out[1][0].score == pytest.approx(0.5 * -0.2 + 0.5 * -1.0 / length_penalty(4, 1.0, "fairseq"))
    unchanged = rerank_nbest(hyps, other, lengths, weight=0.0, len_penalty=1.0, len_penalty_style="fairseq", keep=1)
    assert [[h.tokens for h in row] for row in unchanged] == [[[4, 5]], [[6]]]
    two = rerank_nbest(hyps, [other[0], [[-2.0, -2.0], [-1.0]]], [lengths[0], lengths[0]], weight=1.0,
                       len_penalty=0.0, len_penalty_style="fairseq", keep=2)
    # the rerankers' mean: (-2 - 2) / 2 beats (-12 - 2) / 2
    assert two[0][0].tokens == [4] and two[0][0].score == pytest.approx(-2.0)


def test_rerank_shares_weigh_each_reranker() -> None:
    hyps = [[Hypothesis([4, 5], -1.0, -3.0), Hypothesis([4], -1.0, -3.0)]]
    first, second = [[[-1.0, -5.0]]], [[[-6.0, -1.0]]]  # the first prefers hypothesis 0, the second 1
    lengths = [[[0, 0]]]
    def rank(shares: tuple[float, ...] = ()) -> list[list[Hypothesis]]:
        return rerank_nbest(hyps, first + second, lengths * 2, weight=1.0, len_penalty=0.0,
                            len_penalty_style="fairseq", keep=2, shares=shares)

    equal = rank()
    assert equal[0][0].tokens == [4] and equal[0][0].score == pytest.approx((-5.0 - 1.0) / 2)
    leaning = rank((3.0, 1.0))
    assert leaning[0][0].tokens == [4, 5] and leaning[0][0].score == pytest.approx(0.75 * -1.0 + 0.25 * -6.0)
    assert rerank_shares(2, ()) == [0.5, 0.5] and rerank_shares(2, (0.0, 2.0)) == [0.0, 1.0]
    with pytest.raises(ValueError, match="has 1 weights for 2 rerankers"):
        rerank_shares(2, (1.0,))
    with pytest.raises(ValueError, match="not all 0"):
        rerank_shares(2, (0.0, 0.0))
    with pytest.raises(ValueError, match=">= 0"):
        rerank_shares(2, (-1.0, 2.0))
