"""GNMT coverage penalty in beam search: off (beta 0) is the plain search, bit for bit; on, each
finished hypothesis scores log p / lp + beta * sum_i log(min(sum_j p_ij, 1)), recomputed here by
teacher-forcing the hypothesis (so the per-beam attention sums survive the beam reordering)."""

from __future__ import annotations

import math

import pytest
import torch

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.decoding.beam import beam_search
from transduce.models.rnn import RNNConfig, build_rnn
from transduce.models.transformer import TransformerConfig, build

V = 9


def _model(kind: str) -> torch.nn.Module:
    """A tiny model with large random weights: varied outputs of varied lengths, beams that swap
    parents (an initialized but untrained model repeats one token)."""
    if kind == "rnn":
        model = build_rnn(RNNConfig(embed_dim=8, hidden=12, attention_dim=6, encoder_layers=1, decoder_layers=1,
                                    dropout=0.0, coverage=True), V, V)
    else:
        model = build(TransformerConfig(dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2,
                                        dropout=0.0, max_positions=32), V, V)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 if kind == "rnn" else 0.5))
    return model.eval()


def _sources():
    """Three sources of lengths 5, 2, 4 (EOS last), padded."""
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([5, 2, 4])
    src = torch.randint(4, V, (3, 5), generator=g)
    src[torch.arange(3), lens - 1] = EOS
    src[torch.arange(5)[None, :] >= lens[:, None]] = PAD
    return src, lens


class PlainModel:
    """Only the plain ``StepModel`` methods: beta 0 must not need more."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.encode, self.init_state, self.step = model.encode, model.init_state, model.step


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_zero_penalty_is_the_plain_search(kind: str) -> None:
    model = _model(kind)
    src, lens = _sources()
    args = dict(beam=3, nbest=3, len_penalty=0.8, max_len_a=1.0, max_len_b=3)
    plain = beam_search(PlainModel(model), src, lens, **args)  # type: ignore[arg-type]
    assert beam_search(model, src, lens, coverage_penalty=0.0, **args) == plain  # floats compared exactly
    with pytest.raises(ValueError, match="step_with_attention"):
        beam_search(PlainModel(model), src, lens, coverage_penalty=0.2, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_penalty_of_finished_hypotheses_equals_hand_computation(kind: str) -> None:
    model = _model(kind)
    src, lens = _sources()
    beta, alpha = 0.4, 0.8
    results = beam_search(model, src, lens, beam=3, nbest=3, len_penalty=alpha, max_len_a=1.0, max_len_b=3,
                          coverage_penalty=beta)
    penalties = []
    for b, hyps in enumerate(results):
        n = int(lens[b])
        for h in hyps:
            tgt_in = torch.tensor([[BOS, *h.tokens]])
            with torch.no_grad():  # Transformer: last layer, mean over heads, as step_with_attention
                hidden, weights = model.features_with_attention(src[b : b + 1, :n], lens[b : b + 1], tgt_in)
                log_probs = (hidden[0] @ model.output_weight.t()).log_softmax(-1)  # (T, V)
            target = [*h.tokens, EOS]
            log_prob = sum(float(log_probs[t, tok]) for t, tok in enumerate(target))
            sums = weights[0].sum(0)  # (S,) attention each source position got over all steps, EOS's too
            cp = beta * sum(math.log(min(float(sums[i]), 1.0)) for i in range(n))
            assert h.log_prob == pytest.approx(log_prob, abs=1e-4)
            assert h.score == pytest.approx(log_prob / len(target) ** alpha + cp, abs=1e-4)
            penalties.append(cp)
    assert min(penalties) < -0.01  # the penalty is really there
    assert all(row == sorted(row, key=lambda h: -h.score) for row in results)
