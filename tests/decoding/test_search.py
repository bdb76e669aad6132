"""Greedy and beam search on a tiny random model, checked against exhaustive enumeration."""

import itertools

import pytest
import torch

from transduce.config import DecodeConfig
from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.decoding.beam import beam_search
from transduce.decoding.corpus import search_batch, search_corpus
from transduce.decoding.greedy import greedy_search
from transduce.decoding.hypothesis import Hypothesis, length_penalty, max_lengths
from transduce.models.transformer import TransformerConfig, build

V = 6  # PAD, UNK, BOS, EOS and two ordinary tokens
WORDS = [t for t in range(V) if t not in (PAD, BOS, EOS)]  # UNK may be produced


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        dim=16,
        heads=2,
        ffn_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        dropout=0.0,
        max_positions=32,
    )
    model = build(cfg, V, V).eval()
    with torch.no_grad():  # sharper distributions (tied: embeddings too): fewer near-ties
        model.decoder.output.weight.mul_(3.0)
    return model


def _sources(lengths: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD)
    for b, n in enumerate(lengths):
        src[b, : n - 1] = torch.randint(4, V, (n - 1,), generator=g)
        src[b, n - 1] = EOS
    return src, torch.tensor(lengths)


def _sequence_log_prob(model, src, src_len, tokens: list[int]) -> float:
    """Summed model log-prob of ``tokens`` + EOS, by one teacher-forced pass."""
    tgt_in = torch.tensor([[BOS, *tokens]])
    target = torch.tensor([*tokens, EOS])
    with torch.no_grad():
        lp = model(src[None, :], src_len[None], tgt_in)[0].float().log_softmax(-1)
    return float(lp[torch.arange(len(target)), target].sum())


def _exhaustive(model, src, src_len, limit: int, alpha: float, style: str) -> list[Hypothesis]:
    """Every output of at most ``limit`` tokens (EOS forced after that), best first."""
    hyps = []
    for n in range(limit + 1):
        for tokens in itertools.product(WORDS, repeat=n):
            total = _sequence_log_prob(model, src, src_len, list(tokens))
            hyps.append(
                Hypothesis(list(tokens), total / length_penalty(n + 1, alpha, style), total)
            )
    return sorted(hyps, key=lambda h: -h.score)


@pytest.mark.parametrize(("alpha", "style"), [(1.0, "fairseq"), (0.0, "fairseq"), (0.6, "gnmt")])
def test_huge_beam_equals_exhaustive_search(alpha, style):
    model = _model()
    src, src_lens = _sources([4, 2])
    a, b = 0.0, 3  # at most 3 tokens: 1 + 3 + 9 + 27 = 40 outputs per sentence
    limits = max_lengths(src_lens, a, b).tolist()
    beam = 64
    got = beam_search(
        model,
        src,
        src_lens,
        beam=beam,
        nbest=beam,
        len_penalty=alpha,
        len_penalty_style=style,
        max_len_a=a,
        max_len_b=b,
    )
    for i in range(len(src_lens)):
        want = _exhaustive(model, src[i], src_lens[i], limits[i], alpha, style)
        assert len(got[i]) == len(want) == sum(len(WORDS) ** n for n in range(limits[i] + 1))
        assert want[0].score - want[1].score > 1e-3, "top two too close to compare tokens"
        assert got[i][0].tokens == want[0].tokens
        assert got[i][0].score == pytest.approx(want[0].score, abs=1e-4)
        assert got[i][0].log_prob == pytest.approx(want[0].log_prob, abs=1e-4)
        assert sorted(h.tokens for h in got[i]) == sorted(h.tokens for h in want)
        assert [h.score for h in got[i]] == pytest.approx([h.score for h in want], abs=1e-4)


def test_small_beam_scores_are_model_log_probs():
    """A beam smaller than the search space returns outputs scored as the model scores them."""
    model = _model()
    src, src_lens = _sources([3])
    (hyps,) = beam_search(model, src, src_lens, beam=3, nbest=3, max_len_a=0.0, max_len_b=3)
    for h in hyps:
        total = _sequence_log_prob(model, src[0], src_lens[0], h.tokens)
        assert h.log_prob == pytest.approx(total, abs=1e-4)
        assert h.score == pytest.approx(total / (len(h.tokens) + 1), abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy(seed):
    model = _model(seed)
    src, src_lens = _sources([5, 3, 7, 2], seed=seed + 10)
    limits = dict(max_len_a=1.0, max_len_b=2)
    greedy = greedy_search(model, src, src_lens, **limits)
    beam = beam_search(model, src, src_lens, beam=1, nbest=1, **limits)
    for g, (b,) in zip(greedy, beam, strict=True):
        assert g.tokens == b.tokens
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-4)
        assert g.score == pytest.approx(b.score, abs=1e-4)


def test_greedy_picks_the_argmax_at_every_step():
    model = _model()
    src, src_lens = _sources([4])
    (hyp,) = greedy_search(model, src, src_lens, max_len_a=0.0, max_len_b=4)
    prefix = [BOS]
    with torch.no_grad():
        for t in [*hyp.tokens, EOS]:
            lp = model(src, src_lens, torch.tensor([prefix]))[0, -1].float().log_softmax(-1)
            lp[[PAD, BOS]] = float("-inf")
            if len(prefix) > 4:
                assert t == EOS
            else:
                assert int(lp.argmax()) == t
            prefix.append(t)
    total = _sequence_log_prob(model, src[0], src_lens[0], hyp.tokens)
    assert hyp.log_prob == pytest.approx(total, abs=1e-4)


def test_outputs_respect_the_length_limit_and_never_contain_pad_or_bos():
    model = _model()
    src, src_lens = _sources([6, 2, 4])
    limits = max_lengths(src_lens, 0.5, 1).tolist()
    results = beam_search(model, src, src_lens, beam=4, nbest=4, max_len_a=0.5, max_len_b=1)
    for limit, hyps in zip(limits, results, strict=True):
        assert len(hyps) == 4
        for h in hyps:
            assert len(h.tokens) <= limit
            assert not {PAD, BOS, EOS} & set(h.tokens)


def test_nbest_returns_sorted_distinct_hypotheses():
    model = _model()
    src, src_lens = _sources([4, 3])
    for nbest in (1, 3, 5):
        results = beam_search(model, src, src_lens, beam=5, nbest=nbest, max_len_a=1.0, max_len_b=2)
        for hyps in results:
            assert len(hyps) == nbest
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True)
            assert len({tuple(h.tokens) for h in hyps}) == nbest


def test_nbest_larger_than_beam_raises():
    model = _model()
    src, src_lens = _sources([3])
    with pytest.raises(ValueError, match="nbest"):
        beam_search(model, src, src_lens, beam=2, nbest=3)


def test_unknown_length_penalty_style_raises():
    with pytest.raises(ValueError, match="length penalty"):
        length_penalty(3, 1.0, "bogus")


@pytest.mark.parametrize("beam", [1, 3])
def test_search_corpus_keeps_input_order_and_handles_empty_inputs(beam):
    model = _model()
    g = torch.Generator().manual_seed(3)
    lengths = [5, 0, 2, 7, 1, 0, 3]
    src_ids = [torch.randint(4, V, (n,), generator=g).tolist() for n in lengths]
    cfg = DecodeConfig(beam=beam, nbest=1, batch_size=2, max_len_a=1.0, max_len_b=2)
    results = search_corpus(model, src_ids, cfg)
    assert len(results) == len(src_ids)
    for ids, hyps in zip(src_ids, results, strict=True):
        if not ids:
            assert hyps == [Hypothesis([], 0.0, 0.0)]
            continue
        (alone,) = search_batch(model, [ids], cfg, torch.device("cpu"))
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert hyps[0].score == pytest.approx(alone[0].score, abs=1e-4)


def test_search_corpus_reports_progress():
    model = _model()
    src_ids = [[4], [], [5, 4], [4, 4, 5]]
    seen = []
    search_corpus(model, src_ids, DecodeConfig(beam=1, batch_size=2), progress=seen.append)
    assert sum(seen) == 3  # empty inputs are never searched
