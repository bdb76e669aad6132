"""Ensembles: each step is the log of the members' mean probability, whatever their sizes and kinds;
an ensemble of a model with itself searches exactly like the model."""

import math

import pytest
import torch
from testkit import padded_batch, stepwise

from transduce.decoding.beam import beam_search
from transduce.decoding.ensemble import Ensemble
from transduce.decoding.greedy import greedy_search
from transduce.models.rnn import RNNConfig, build_rnn
from transduce.models.transformer import TransformerConfig, build

V = 11


def _transformer(seed: int, dim: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = TransformerConfig(dim=dim, heads=2, ffn_dim=2 * dim, encoder_layers=2, decoder_layers=2, max_positions=32)
    return build(cfg, V, V).eval()


def _rnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = RNNConfig(embed_dim=8, hidden=12, encoder_layers=1, decoder_layers=1, attention="additive", dropout=0.0)
    return build_rnn(cfg, V, V).eval()


@torch.no_grad()
def test_each_step_is_the_log_of_the_mean_probability_of_different_members() -> None:
    members = [_transformer(0, 16), _transformer(1, 8), _rnn(2)]  # memory sizes 16, 8 and 12
    ensemble = Ensemble(members)
    assert ensemble.memory_dims == (16, 8, 12)
    src, src_lens, tgt_in = padded_batch(V)
    reorder = torch.tensor([2, 0, 0])
    got = stepwise(ensemble, src, src_lens, tgt_in, reorder)[0]  # (3, T, V)
    per_member = torch.stack([stepwise(m, src, src_lens, tgt_in, reorder)[0] for m in members])  # (M, 3, T, V)
    torch.testing.assert_close(got, per_member.exp().mean(dim=0).log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(got.shape[:2]))


@torch.no_grad()
def test_attention_weights_are_averaged() -> None:
    members = [_transformer(0, 16), _rnn(2)]
    ensemble = Ensemble(members)
    src, src_lens, tgt_in = padded_batch(V)
    memory, memory_lens = ensemble.encode(src, src_lens)
    _, _, weights = ensemble.step_with_attention(tgt_in[:, 0], memory, ensemble.init_state(memory, memory_lens))
    singles = []
    for m in members:
        mem, lens = m.encode(src, src_lens)
        singles.append(m.step_with_attention(tgt_in[:, 0], mem, m.init_state(mem, lens))[2])
    torch.testing.assert_close(weights, (singles[0] + singles[1]) / 2)


@torch.no_grad()
def test_a_model_ensembled_with_itself_searches_like_the_model() -> None:
    model = _transformer(3, 16)
    src, src_lens, _ = padded_batch(V)
    for search in (lambda m: greedy_search(m, src, src_lens), lambda m: beam_search(m, src, src_lens, beam=4, nbest=2)):
        alone, doubled = search(model), search(Ensemble([model, model]))
        flat = lambda hyps: [h for row in hyps for h in (row if isinstance(row, list) else [row])]  # noqa: E731
        for a, b in zip(flat(alone), flat(doubled), strict=True):
            assert a.tokens == b.tokens and math.isclose(a.score, b.score, rel_tol=1e-5, abs_tol=1e-5)


def test_an_ensemble_needs_two_members() -> None:
    with pytest.raises(ValueError, match="at least 2 models"):
        Ensemble([_rnn(0)])
