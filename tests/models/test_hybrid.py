"""Hybrid CTC/attention model: decoder targets, the attention loss against step-by-step decoding,
dynamic chunk draws, the combined loss, and model-level streaming."""

from __future__ import annotations

import pytest
import torch

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.models.ctc import CTCModelConfig, attention_loss, build_ctc, ctc_loss, decoder_io, tied_aliases
from transduce.train.loss import CTCLoss

V = 9


def hybrid(**overrides: object):
    torch.manual_seed(0)
    cfg = CTCModelConfig(input_dim=20, dim=32, heads=4, layers=2, ffn_dim=64, kernel_size=5, subsampling_channels=8,
                         dropout=0.0, causal_conv=True, decoder_layers=2, reverse_decoder_layers=1, **overrides)
    return build_ctc(cfg, V), cfg


def test_decoder_io_adds_bos_eos_and_reverses_only_real_tokens() -> None:
    targets = torch.tensor([[4, 5, 6], [7, 8, PAD]])
    lens = torch.tensor([3, 2])
    tgt_in, tgt_out = decoder_io(targets, lens)
    assert tgt_in.tolist() == [[BOS, 4, 5, 6], [BOS, 7, 8, PAD]]
    assert tgt_out.tolist() == [[4, 5, 6, EOS], [7, 8, EOS, PAD]]
    r_in, r_out = decoder_io(targets, lens, reverse=True)
    assert r_in.tolist() == [[BOS, 6, 5, 4], [BOS, 8, 7, PAD]]
    assert r_out.tolist() == [[6, 5, 4, EOS], [8, 7, EOS, PAD]]


def test_attention_loss_equals_step_by_step_decoding() -> None:
    """Teacher forcing over padded batches equals summing log-probs from ``step`` one token at a time,
    for both decoders (the right-to-left one on reversed tokens)."""
    model, _ = hybrid()
    model.eval()
    memory, memory_lens = torch.randn(2, 11, 32), torch.tensor([11, 7])
    targets, lens = torch.tensor([[4, 5, 6, 3], [7, 8, PAD, PAD]]), torch.tensor([4, 2])
    loss, nll = attention_loss(model, memory, memory_lens, targets, lens, label_smoothing=0.0, reverse_weight=0.25)
    expected = 0.0
    for decoder, weight, reverse in ((model.decoder, 0.75, False), (model.reverse_decoder, 0.25, True)):
        for b in range(2):
            tokens = targets[b, : lens[b]].tolist()
            tokens = tokens[::-1] if reverse else tokens
            state = decoder.init_state(memory[b : b + 1], memory_lens[b : b + 1])
            previous = BOS
            for token in [*tokens, EOS]:
                with torch.no_grad():
                    lp, state = decoder.step(torch.tensor([previous]), memory[b : b + 1], state)
                expected -= weight * float(lp[0, token])
                previous = token
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(nll) == pytest.approx(expected, rel=1e-5)


def test_hybrid_loss_mixes_ctc_and_attention_and_trains_both_parts() -> None:
    from contextlib import nullcontext

    model, _ = hybrid()
    feats, feat_lens = torch.randn(2, 60, 20), torch.tensor([60, 45])
    targets, lens = torch.tensor([[4, 5, 6], [7, 8, PAD]]), torch.tensor([3, 2])
    out, out_lens = model.encode(feats, feat_lens)
    ctc = ctc_loss(model.ctc_log_probs(out), out_lens, targets, lens)
    att, _ = attention_loss(model, out, out_lens, targets, lens, label_smoothing=0.1, reverse_weight=0.3)
    module = CTCLoss(model, nullcontext(), ctc_weight=0.3, reverse_weight=0.3, label_smoothing=0.1)
    loss, _ = module(feats, feat_lens, targets, lens)
    assert float(loss.detach()) == pytest.approx(0.3 * float(ctc.detach()) + 0.7 * float(att.detach()), rel=1e-5)
    loss.backward()
    for part in (model.head, model.decoder, model.reverse_decoder, model.encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_dynamic_chunks_draw_full_context_and_bounded_chunks_reproducibly() -> None:
    model, _ = hybrid(dynamic_chunk=True, max_chunk=6, full_context_prob=0.4, left_chunks=3, dynamic_left_chunks=True)
    torch.manual_seed(5)
    draws = [model.chunk_training.draw() for _ in range(400)]
    torch.manual_seed(5)
    assert draws == [model.chunk_training.draw() for _ in range(400)]  # from the global RNG (resume restores it)
    full = sum(chunk == 0 for chunk, _ in draws) / len(draws)
    assert 0.3 < full < 0.5
    chunks = {c for c, _ in draws if c}
    lefts = {left for c, left in draws if c}
    assert chunks == set(range(1, 7)) and lefts == {0, 1, 2, 3}


def test_training_mode_uses_chunks_and_eval_mode_full_context() -> None:
    model, _ = hybrid(dynamic_chunk=True, max_chunk=2, full_context_prob=0.0)
    feats, lens = torch.randn(1, 80, 20), torch.tensor([80])
    model.eval()
    full = model.encode(feats, lens)[0]
    chunked = model.encode(feats, lens, chunk_size=2)[0]
    torch.manual_seed(0)
    model.train()
    trained = model.encode(feats, lens)[0]
    assert not torch.allclose(full, chunked)
    assert any(torch.allclose(trained, model.eval().encode(feats, lens, chunk_size=c)[0]) for c in (1, 2))


def test_model_streaming_applies_the_normalizer_like_encode() -> None:
    from transduce.data.cmvn import CMVNStats, GlobalCMVN

    stats = CMVNStats(20)
    stats.add(torch.randn(300, 20) * 3 + 1)
    torch.manual_seed(0)
    cfg = CTCModelConfig(input_dim=20, dim=32, heads=4, layers=2, ffn_dim=64, kernel_size=5, dropout=0.0,
                         causal_conv=True)
    model = build_ctc(cfg, V, GlobalCMVN(20))
    model.normalizer.load_state_dict(GlobalCMVN.from_stats(stats).state_dict())
    model.eval()
    feats = torch.randn(1, 97, 20) * 3 + 1
    full = model.encode(feats, torch.tensor([97]), chunk_size=4, left_chunks=2)[0]
    state = model.init_stream()
    parts = []
    for start in range(0, 97, 13):
        y, state = model.forward_chunk(feats[:, start : start + 13], state, chunk_size=4, left_chunks=2)
        parts.append(y)
    parts.append(model.forward_chunk(feats[:, :0], state, chunk_size=4, left_chunks=2, final=True)[0])
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_streaming_refuses_utterance_norm_and_tied_weights_are_aliases() -> None:
    model, cfg = hybrid(utterance_norm=True)
    with pytest.raises(ValueError, match="utterance_norm"):
        model.init_stream()
    assert tied_aliases(cfg) == {"decoder.output.weight", "reverse_decoder.output.weight"}


@pytest.mark.parametrize(("key", "value"), [("reverse_decoder_layers", 1), ("ctc_weight", 1.5)])
def test_bad_hybrid_config_names_the_key(key: str, value: object) -> None:
    cfg = CTCModelConfig(input_dim=20, dim=32, heads=4, layers=1, ffn_dim=64, **{key: value})
    with pytest.raises(ValueError, match=f"model.{key}"):
        build_ctc(cfg, V)
