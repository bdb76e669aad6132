"""The Transformer with each ``model.positions``: incremental decoding equals the teacher-forced pass, beam search
scores equal teacher-forced scores, relative schemes have no length limit, sinusoidal/learned state dicts keep
their names, and bad settings fail naming the field."""

import pytest
import torch
from testkit import padded_batch, stepwise

from transduce.data.tokenizer import BOS, EOS
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.errors import ConfigError
from transduce.models.transformer import TransformerConfig, build

V = 11
POSITIONS = ["sinusoidal", "learned", "shaw", "rope"]


def _model(positions: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    args = dict(dim=16, heads=2, ffn_dim=32, encoder_layers=2, decoder_layers=2, max_positions=32, max_relative=3)
    cfg = TransformerConfig(positions=positions, **{**args, **overrides})
    return build(cfg, V, V).eval()


@pytest.mark.parametrize("pre_norm", [True, False], ids=["pre_ln", "post_ln"])
@pytest.mark.parametrize("positions", POSITIONS)
def test_incremental_steps_equal_teacher_forced_forward(positions, pre_norm):
    model = _model(positions, pre_norm=pre_norm)
    src, src_lens, tgt_in = padded_batch(V)
    with torch.no_grad():
        full = model(src, src_lens, tgt_in).float().log_softmax(-1)  # (B, T, V)
        steps = stepwise(model, src, src_lens, tgt_in)[0]
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positions", ["shaw", "rope"])
def test_incremental_steps_with_beam_reordering(positions):
    model = _model(positions)
    src, src_lens, tgt_in = padded_batch(V)
    order = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        reordered = stepwise(model, src, src_lens, tgt_in, reorder=order)[0]
        want = model(src[order], src_lens[order], tgt_in[order]).float().log_softmax(-1)
    torch.testing.assert_close(reordered, want, atol=1e-5, rtol=0)


def _teacher_forced_log_prob(model, src, src_len, tokens: list[int]) -> float:
    """Sum of log P(token) over ``tokens`` + EOS from one teacher-forced pass."""
    tgt = torch.tensor([[BOS, *tokens, EOS]])
    lp = model(src, src_len, tgt[:, :-1]).float().log_softmax(-1)[0]  # (T, V)
    return float(lp.gather(-1, tgt[0, 1:, None]).sum())


@pytest.mark.parametrize("positions", ["shaw", "rope"])
def test_beam_search_scores_equal_teacher_forced_scores(positions):
    model = _model(positions, seed=3)
    src, src_lens, _ = padded_batch(V)
    with torch.no_grad():
        beams = beam_search(model, src, src_lens, beam=4, nbest=3, max_len_a=1.0, max_len_b=3)
        greedy = greedy_search(model, src, src_lens, max_len_a=1.0, max_len_b=3)
        beam1 = beam_search(model, src, src_lens, beam=1, nbest=1, max_len_a=1.0, max_len_b=3)
        for b, hyps in enumerate(beams):
            one_src, one_len = src[b : b + 1, : int(src_lens[b])], src_lens[b : b + 1]
            for hyp in hyps:
                want = _teacher_forced_log_prob(model, one_src, one_len, hyp.tokens)
                assert hyp.log_prob == pytest.approx(want, abs=1e-4)
    assert [h[0].tokens for h in beam1] == [g.tokens for g in greedy]


@pytest.mark.parametrize("positions", ["shaw", "rope"])
def test_relative_positions_have_no_length_limit(positions):
    model = _model(positions, max_positions=8)
    src = torch.randint(4, V, (1, 20))
    tgt_in = torch.cat([torch.tensor([[BOS]]), torch.randint(4, V, (1, 15))], dim=1)
    with torch.no_grad():
        full = model(src, torch.tensor([20]), tgt_in).float().log_softmax(-1)
        steps = stepwise(model, src, torch.tensor([20]), tgt_in)[0]
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


def test_added_positions_keep_their_state_dict_names():
    """Checkpoints of sinusoidal/learned models load as before: no new names, the learned table where it was."""
    sinusoidal = set(_model("sinusoidal").state_dict())
    learned = set(_model("learned").state_dict())
    assert not any("positions" in name for name in sinusoidal)
    assert learned - sinusoidal == {"encoder.embed.positions.embedding.weight",
                                    "decoder.embed.positions.embedding.weight"}
    shaw = set(_model("shaw").state_dict())
    assert shaw - sinusoidal == {f"{side}.layers.{i}.{attn}.positions.keys" for side, attn in
                                 [("encoder", "attn"), ("decoder", "self_attn")] for i in range(2)}
    assert set(_model("rope").state_dict()) == sinusoidal


def test_shaw_tables_get_gradients():
    model = _model("shaw").train()
    src, src_lens, tgt_in = padded_batch(V)
    model(src, src_lens, tgt_in).sum().backward()
    grad = model.encoder.layers[0].attn.positions.keys.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"positions": "alibi"}, "model.positions: unknown 'alibi'"),
    ({"positions": "shaw", "max_relative": 0}, "model.max_relative"),
    ({"positions": "rope", "dim": 12, "heads": 4}, "model.positions: rope needs an even head size"),
])
def test_bad_position_settings_fail_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TransformerConfig(**overrides)
