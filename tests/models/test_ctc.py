"""CTC loss against F.ctc_loss and a brute-force sum over alignments; config validation; a tiny
model that learns a synthetic symbol-spotting task."""

import math

import pytest
import torch
import torch.nn.functional as F
from testkit import ctc_label_log_probs
from torch import nn

from transduce.decoding.ctc import ctc_greedy
from transduce.metrics.wer import cer
from transduce.models.ctc import CTCModelConfig, build_ctc, ctc_loss


def brute_force_nll(log_probs, length, target):
    """-log sum over every path of ``length`` frames that collapses to ``target``."""
    return -ctc_label_log_probs(log_probs[:length]).get(tuple(target), -math.inf)


CASES = [  # (frames, target)
    (5, [1, 2]), (5, [1, 1]), (3, [1, 1]), (4, []), (2, [2]), (5, [2, 1, 2]), (1, [1]),
]


def padded(cases, seed):
    torch.manual_seed(seed)
    lengths = torch.tensor([t for t, _ in cases])
    log_probs = torch.randn(len(cases), 5, 3).log_softmax(-1)  # (B, T, V), frames beyond a length are padding
    targets = torch.zeros(len(cases), 3, dtype=torch.long)
    for b, (_, tgt) in enumerate(cases):
        targets[b, : len(tgt)] = torch.tensor(tgt, dtype=torch.long)
    target_lens = torch.tensor([len(tgt) for _, tgt in cases])
    return log_probs, lengths, targets, target_lens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ctc_loss_equals_brute_force_over_alignments(seed):
    log_probs, lengths, targets, target_lens = padded(CASES, seed)
    got = ctc_loss(log_probs, lengths, targets, target_lens)
    want = sum(brute_force_nll(log_probs[b], t, tgt) for b, (t, tgt) in enumerate(CASES))
    assert math.isclose(got.item(), want, rel_tol=1e-5)


def test_ctc_loss_equals_torch_per_utterance_and_zeroes_impossible_targets():
    cases = [*CASES, (2, [1, 1])]  # [1, 1] needs a blank between: 3 frames, impossible in 2
    log_probs, lengths, targets, target_lens = padded(cases, 3)
    got = ctc_loss(log_probs, lengths, targets, target_lens)
    per_utt = [
        F.ctc_loss(log_probs[b, :t, None], targets[b : b + 1, : len(tgt)], [t], [len(tgt)], reduction="none")
        for b, (t, tgt) in enumerate(cases)
    ]
    assert math.isinf(per_utt[-1].item())
    torch.testing.assert_close(got, torch.cat(per_utt[:-1]).sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "override, key",
    [({"subsampling": 5}, "subsampling"), ({"encoder": "lstm"}, "encoder"), ({"heads": 5}, "heads"),
     ({"kernel_size": 8}, "kernel_size"), ({"input_dim": 6}, "input_dim"), ({"dropout": 1.0}, "dropout"),
     ({"encoder": "transformer", "causal_conv": True}, "causal_conv")],
)
def test_build_rejects_bad_values_naming_the_key(override, key):
    with pytest.raises(ValueError, match=f"model.{key}"):
        build_ctc(CTCModelConfig(**override), 10)


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
def test_forward_shapes_and_normalizer(encoder):
    cfg = CTCModelConfig(encoder=encoder, input_dim=20, dim=16, heads=2, layers=1, ffn_dim=32, subsampling=6)

    class Shift(nn.Module):
        def forward(self, x):
            return x - 3.0

    torch.manual_seed(0)
    model = build_ctc(cfg, 7, normalizer=Shift()).eval()
    feats, lens = torch.randn(2, 40, 20) + 3.0, torch.tensor([40, 25])
    log_probs, out_lens = model(feats, lens)
    assert log_probs.dtype == torch.float32 and log_probs.shape == (2, 5, 7)
    assert out_lens.tolist() == [5, 3]  # 40 -> 19 -> 5, 25 -> 12 -> 3
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 5))
    enc_out, _ = model.encoder.encode(feats - 3.0, lens)
    torch.testing.assert_close(model.head(enc_out).log_softmax(-1), log_probs)


def synthetic_batch(gen, batch, feat_dim=16, symbols=4):
    """Each symbol k lights up its own 4 feature bins for 8 frames; 4 noisy frames separate symbols."""
    seqs = [torch.randint(1, symbols + 1, (int(torch.randint(2, 5, (1,), generator=gen)),), generator=gen).tolist()
            for _ in range(batch)]
    lengths = torch.tensor([4 + 12 * len(s) for s in seqs])
    feats = 0.3 * torch.randn(batch, int(lengths.max()), feat_dim, generator=gen)
    targets = torch.zeros(batch, 4, dtype=torch.long)
    for b, seq in enumerate(seqs):
        targets[b, : len(seq)] = torch.tensor(seq)
        for i, k in enumerate(seq):
            feats[b, 4 + 12 * i : 12 + 12 * i, 4 * (k - 1) : 4 * k] += 1.0
    return feats, lengths, targets, torch.tensor([len(s) for s in seqs]), seqs


def test_tiny_conformer_learns_synthetic_symbols():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = CTCModelConfig(input_dim=16, dim=32, heads=2, layers=2, ffn_dim=64, kernel_size=7, dropout=0.0)
    model = build_ctc(cfg, 5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        feats, lengths, targets, target_lens, _ = synthetic_batch(gen, 16)
        log_probs, out_lens = model(feats, lengths)
        loss = ctc_loss(log_probs, out_lens, targets, target_lens) / 16
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    feats, lengths, _, _, seqs = synthetic_batch(gen, 32)
    with torch.no_grad():
        hyps = ctc_greedy(*model(feats, lengths))
    error = cer([" ".join(map(str, h.tokens)) for h in hyps], [" ".join(map(str, s)) for s in seqs])
    assert error < 5.0, error


def test_utterance_mean_norm_ignores_padding_and_removes_channel_offsets() -> None:
    """Each utterance loses its own mean over real frames (so a constant per-bin offset, like a
    microphone's coloration, vanishes), whatever padding the batch adds."""
    from transduce.models.ctc import utterance_mean_norm

    torch.manual_seed(0)
    a, b = torch.randn(7, 5), torch.randn(4, 5)
    batch = torch.zeros(2, 7, 5)
    batch[0], batch[1, :4] = a, b
    batch[1, 4:] = 100.0  # garbage in padding must not leak into the mean
    out = utterance_mean_norm(batch, torch.tensor([7, 4]))
    torch.testing.assert_close(out[0], a - a.mean(0))
    torch.testing.assert_close(out[1, :4], b - b.mean(0))
    assert torch.all(out[1, 4:] == 0)
    shifted = utterance_mean_norm(batch + torch.arange(5.0), torch.tensor([7, 4]))
    torch.testing.assert_close(shifted[0], out[0])
