"""The speech translation model (``models/st.py``) and its loss: the loss against its two terms computed apart
(also under bf16 autocast), cached and streamed decoding against the full and chunk-masked forward, the tagged
search against greedy decoding written out."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from testkit import stepwise

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.decoding.tagged import tagged_beam_search
from transduce.models.st import STModelConfig, build_st, tag_ids
from transduce.tasks.speech_translation import STLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(ctc_layer: int = 0, **overrides: object) -> STModelConfig:
    return STModelConfig(input_dim=40, dim=32, heads=2, layers=2, ffn_dim=64, kernel_size=5, subsampling=4,
                         subsampling_channels=8, dropout=0.0, decoder_layers=2, ctc_layer=ctc_layer,
                         **overrides)  # type: ignore[arg-type]


def batch(vocab: int = 9, targets: int = 12, tags: tuple[int, ...] = (12, 13)) -> tuple[torch.Tensor, ...]:
    """Random features of 2 utterances, their transcripts and tagged decoder input/output."""
    g = torch.Generator().manual_seed(3)
    feats, feat_lens = torch.randn(2, 90, 40, generator=g), torch.tensor([90, 61])
    transcripts = torch.tensor([[4, 5, 6, 4], [7, 8, PAD, PAD]])
    pieces = [[4, 9, 11], [5, 6]]
    tgt_in = torch.tensor([[tags[0], *pieces[0]], [tags[1], *pieces[1], PAD]])
    tgt_out = torch.tensor([[*pieces[0], EOS], [*pieces[1], EOS, PAD]])
    return feats, feat_lens, transcripts, torch.tensor([4, 2]), tgt_in, tgt_out


@pytest.mark.parametrize("weight, ctc_layer", [(0.3, 0), (0.5, 1), (0.0, 0)])
def test_loss_is_weighted_ctc_plus_cross_entropy(weight: float, ctc_layer: int) -> None:
    torch.manual_seed(0)
    model = build_st(tiny(ctc_layer), 9, 12, 2).eval()
    feats, feat_lens, transcripts, transcript_lens, tgt_in, tgt_out = batch()
    loss, nll = STLoss(model, nullcontext(), ctc_weight=weight, label_smoothing=0.1)(
        feats, feat_lens, transcripts, transcript_lens, tgt_in, tgt_out)
    logits = model(feats, feat_lens, tgt_in)  # (B, Y, W + L)
    ce = F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD, label_smoothing=0.1, reduction="sum")
    plain = F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD, reduction="sum")
    encoder = model.encoder
    if ctc_layer:  # the CTC head reads block ctc_layer: the same encoder cut after that block
        encoder.blocks = encoder.blocks[:ctc_layer]
    hidden, out_lens = encoder.encode(model.normalizer(feats), feat_lens)
    log_probs = model.head(hidden).log_softmax(-1).transpose(0, 1)  # (T', B, V)
    ctc = F.ctc_loss(log_probs, transcripts, out_lens, transcript_lens, blank=0, reduction="sum", zero_infinity=True)
    torch.testing.assert_close(loss, weight * ctc + (1 - weight) * ce, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(nll, plain, rtol=1e-5, atol=1e-4)


def test_incremental_decoding_equals_the_full_forward() -> None:
    torch.manual_seed(0)
    model = build_st(tiny(), 9, 12, 2).eval()
    feats, feat_lens, *_, tgt_in, _ = batch()
    full = model(feats, feat_lens, tgt_in).log_softmax(-1)  # (B, Y, W + L)
    steps, _ = stepwise(model, feats, feat_lens, tgt_in)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
    reorder = torch.tensor([1, 1, 0])  # as beam search reorders rows after step 1
    moved, _ = stepwise(model, feats, feat_lens, tgt_in, reorder)
    torch.testing.assert_close(moved, full[reorder], rtol=1e-5, atol=1e-5)


def test_tagged_beam_1_is_greedy_from_the_tag_and_never_emits_a_tag() -> None:
    torch.manual_seed(1)
    model = build_st(tiny(), 9, 12, 2).eval()
    feats, feat_lens, *_ = batch()
    tags = tag_ids(12, 2)
    memory, lens = model.encode(feats, feat_lens)
    limits = torch.tensor([6, 6])
    found = tagged_beam_search(model, memory, lens, tags, tags, limits, beam=1)
    for row in range(2):  # reference: greedy from the tag, tags/PAD/BOS forbidden, only EOS at the limit
        state, token, out = model.init_state(memory[row: row + 1], lens[row: row + 1]), tags[row: row + 1], []
        while True:
            lp, state = model.step(token, memory[row: row + 1], state)
            lp[0, tags], lp[0, PAD], lp[0, BOS] = float("-inf"), float("-inf"), float("-inf")
            best = EOS if len(out) == int(limits[row]) else int(lp[0].argmax())
            if best == EOS:
                break
            out.append(best)
            token = torch.tensor([best])
        assert found[row][0].tokens == out
    german, french = (tagged_beam_search(model, memory, lens, torch.full((2,), int(t)), tags, limits, beam=3)
                      for t in tags)
    assert [h[0].tokens for h in german] != [h[0].tokens for h in french]


def test_the_loss_runs_under_bf16_autocast_with_fp32_heads() -> None:
    """bf16 training: the CTC head (fp32 weights) reads bf16 encoder states; the loss stays near fp32's."""
    torch.manual_seed(0)
    model = build_st(tiny(), 9, 12, 2).eval()
    args = batch()
    exact, _ = STLoss(model, nullcontext(), ctc_weight=0.3, label_smoothing=0.1)(*args)
    loss, _ = STLoss(model, torch.autocast("cpu", dtype=torch.bfloat16), ctc_weight=0.3, label_smoothing=0.1)(*args)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, exact, rtol=3e-2, atol=0.0)
    assert model.head.weight.grad is not None and torch.isfinite(model.head.weight.grad).all()


def test_streamed_encoder_equals_the_chunk_masked_encoder() -> None:
    torch.manual_seed(2)
    model = build_st(tiny(causal_conv=True, decoder_dim=24), 9, 12, 2).eval()  # with a bridge 32 -> 24
    feats, feat_lens, *_ = batch()
    full, lens = model.encode(feats[:1], feat_lens[:1], chunk_size=3, left_chunks=2)
    state, parts, start = model.init_stream(), [], 0
    for size in (5, 17, 1, 30, 9):
        out, state = model.forward_chunk(feats[:1, start: start + size], state, chunk_size=3, left_chunks=2)
        parts.append(out)
        start += size
    out, _ = model.forward_chunk(feats[:1, start:], state, chunk_size=3, left_chunks=2, final=True)
    streamed = torch.cat([*parts, out], dim=1)
    assert streamed.shape == full.shape == (1, int(lens), 24)
    torch.testing.assert_close(streamed, full, rtol=1e-5, atol=1e-5)
