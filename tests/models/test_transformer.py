"""Transformer seq2seq: incremental decoding equals the teacher-forced pass, state reordering,
and embedding tying."""

import pytest
import torch
from testkit import padded_batch, stepwise

from transduce.data.tokenizer import PAD
from transduce.models.transformer import TransformerConfig, build

V = 11


def _model(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        dim=16,
        heads=2,
        ffn_dim=32,
        encoder_layers=2,
        decoder_layers=2,
        max_positions=32,
        **overrides,
    )
    return build(cfg, V, V).eval()


def _inputs(seed: int = 1):
    return padded_batch(V, seed)


def _stepwise(model, src, src_lens, tgt_in) -> torch.Tensor:
    return stepwise(model, src, src_lens, tgt_in)[0]  # (B, T, V)


@pytest.mark.parametrize("pre_norm", [True, False], ids=["pre_ln", "post_ln"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_incremental_step_equals_teacher_forced_forward(pre_norm, positions):
    model = _model(pre_norm=pre_norm, positions=positions)
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        full = model(src, src_lens, tgt_in).float().log_softmax(-1)
        steps = _stepwise(model, src, src_lens, tgt_in)
    assert steps.shape == full.shape == (3, tgt_in.size(1), V)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


def test_source_padding_does_not_change_results():
    model = _model()
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        batched = model(src, src_lens, tgt_in)
        for b in range(src.size(0)):
            n = int(src_lens[b])
            alone = model(src[b : b + 1, :n], src_lens[b : b + 1], tgt_in[b : b + 1])
            torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-5, rtol=1e-5)


def test_features_times_output_weight_equals_logits():
    model = _model()
    src, src_lens, tgt_in = _inputs()
    with torch.no_grad():
        logits = model(src, src_lens, tgt_in)
        hidden = model.features(src, src_lens, tgt_in)
    torch.testing.assert_close(hidden @ model.output_weight.t(), logits, atol=1e-5, rtol=1e-5)


def test_state_reorder_equals_decoding_reordered_rows():
    model = _model()
    src, src_lens, tgt_in = _inputs()
    indices = torch.tensor([2, 0, 0, 1])
    split = 3
    with torch.no_grad():
        memory, memory_lens = model.encode(src, src_lens)
        state = model.init_state(memory, memory_lens)
        for t in range(split):
            _, state = model.step(tgt_in[:, t], memory, state)
        state = state.reorder(indices)
        memory = memory[indices]
        reordered = []
        for t in range(split, tgt_in.size(1)):
            lp, state = model.step(tgt_in[indices, t], memory, state)
            reordered.append(lp)
        want = _stepwise(model, src[indices], src_lens[indices], tgt_in[indices])[:, split:]
    assert state.steps == tgt_in.size(1)
    torch.testing.assert_close(torch.stack(reordered, dim=1), want, atol=1e-5, rtol=0)


def test_shared_and_tied_embeddings_are_one_parameter():
    model = _model(share_embeddings=True, tie_output=True)
    src_w = model.encoder.embed.embedding.weight
    assert src_w is model.decoder.embed.embedding.weight
    assert src_w is model.decoder.output.weight
    params = list(model.parameters())
    assert sum(p is src_w for p in params) == 1


def test_tie_output_without_sharing_ties_only_the_target_side():
    torch.manual_seed(0)
    cfg = TransformerConfig(
        dim=8,
        heads=2,
        ffn_dim=16,
        encoder_layers=1,
        decoder_layers=1,
        share_embeddings=False,
        tie_output=True,
    )
    model = build(cfg, 7, 9)
    assert model.decoder.output.weight is model.decoder.embed.embedding.weight
    assert model.encoder.embed.embedding.weight is not model.decoder.embed.embedding.weight
    assert model.encoder.embed.embedding.weight.shape == (7, 8)
    assert model.output_weight.shape == (9, 8)


def test_untied_output_is_a_separate_parameter():
    model = _model(share_embeddings=True, tie_output=False)
    assert model.decoder.output.weight is not model.decoder.embed.embedding.weight


def test_padding_embedding_row_is_zero():
    model = _model()
    assert torch.all(model.encoder.embed.embedding.weight[PAD] == 0)


def test_share_embeddings_with_different_vocab_sizes_fails_clearly():
    cfg = TransformerConfig(dim=8, heads=2, ffn_dim=16, share_embeddings=True)
    with pytest.raises(ValueError, match=r"share_embeddings.*7.*9"):
        build(cfg, 7, 9)
