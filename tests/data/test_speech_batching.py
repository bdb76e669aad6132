"""Frame-budget speech batches: budget kept, identical whatever the workers, augmentation reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transduce.data.audio import load_audio
from transduce.data.augment import AugmentConfig, SpecAugmentConfig, sample_vtlp_warp
from transduce.data.cmvn import CMVNStats
from transduce.data.features import Fbank, FbankConfig, mel_matrix
from transduce.data.manifest import read_manifest
from transduce.data.speech_batching import (
    SpeechCollator,
    batch_seed,
    iterate_speech,
    make_speech_batches,
    utterance_frames,
)
from transduce.data.tones import write_tones

FBANK = FbankConfig(num_mel_bins=40)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return write_tones(tmp_path_factory.mktemp("tones"), train=24, valid=2)


def _stats(utts) -> CMVNStats:
    stats = CMVNStats(FBANK.num_mel_bins)
    for u in utts:
        stats.add(Fbank(FBANK)(load_audio(u.audio)))
    return stats


def test_frames_from_manifest_match_features_and_budget_holds(tones: Path) -> None:
    utts = read_manifest(tones / "train.jsonl")
    frames = utterance_frames(utts, FBANK)
    assert frames == [Fbank(FBANK)(load_audio(u.audio)).size(0) for u in utts]
    batches = make_speech_batches(frames, max_frames=600, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(utts)))
    for b in batches:
        assert len(b) == 1 or len(b) * (max(frames[i] for i in b) + 1) <= 600


def test_plain_collation_equals_features_of_each_file(tones: Path) -> None:
    utts = read_manifest(tones / "train.jsonl")
    targets = [[1, 2]] * len(utts)
    batch = SpeechCollator(utts, targets, fbank=FBANK)([3, 0])
    for row, i in enumerate([3, 0]):
        feats = Fbank(FBANK)(load_audio(utts[i].audio))
        torch.testing.assert_close(batch.feats[row, : batch.feat_lens[row]], feats)
        assert torch.all(batch.feats[row, batch.feat_lens[row] :] == 0)


def test_augmented_batches_identical_whatever_the_workers(tones: Path) -> None:
    utts = read_manifest(tones / "train.jsonl")
    targets = [[1, 2, 3]] * len(utts)
    augment = AugmentConfig(speed_factors=(0.9, 1.1), noise_prob=0.5, spec=SpecAugmentConfig(freq_width=5))
    collator = SpeechCollator(utts, targets, fbank=FBANK, augment=augment, cmvn=_stats(utts), seed=3, epoch=2)
    batches = make_speech_batches(utterance_frames(utts, FBANK), max_frames=800, seed=1, epoch=2)
    serial = list(iterate_speech(batches, collator))
    parallel = list(iterate_speech(batches, collator, num_workers=2))
    resumed = list(iterate_speech(batches, collator, start=2))
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a.feats, b.feats, rtol=0, atol=0)
    torch.testing.assert_close(resumed[0].feats, serial[2].feats, rtol=0, atol=0)
    other_epoch = SpeechCollator(utts, targets, fbank=FBANK, augment=augment, cmvn=_stats(utts), seed=3, epoch=3)
    assert not torch.equal(other_epoch(batches[0]).feats, serial[0].feats)


def test_spec_augment_masks_hit_the_training_mean(tones: Path) -> None:
    """Masks are applied after normalization, so masked frames/bins equal the CMVN mean."""
    utts = read_manifest(tones / "train.jsonl")
    stats = _stats(utts)
    spec = SpecAugmentConfig(freq_masks=2, freq_width=8, time_masks=0)
    augment = AugmentConfig(speed_factors=(), spec=spec)
    feats = SpeechCollator(utts, [[1]] * len(utts), fbank=FBANK, augment=augment, cmvn=stats, seed=1)([0]).feats[0]
    plain = Fbank(FBANK)(load_audio(utts[0].audio))
    changed = (feats - plain).abs().amax(dim=0) > 1e-5  # (F,) bins that were masked
    assert changed.any()
    torch.testing.assert_close(feats[:, changed], stats.mean.float()[changed].expand(feats.size(0), -1),
                               rtol=0, atol=1e-4)


def test_vtlp_warps_each_utterance_by_a_seeded_factor(tones: Path) -> None:
    """With VTLP alone, an utterance's features are the filterbank with one warped mel matrix."""
    utts = read_manifest(tones / "train.jsonl")
    stats = _stats(utts)
    no_masks = SpecAugmentConfig(freq_masks=0, time_masks=0)
    augment = AugmentConfig(speed_factors=(), vtlp_warp=0.15, spec=no_masks)
    feats = SpeechCollator(utts, [[1]] * len(utts), fbank=FBANK, augment=augment, cmvn=stats, seed=4)([1]).feats[0]
    # no speed or noise draws come first, so the batch's generator draws the warp first
    warp = sample_vtlp_warp(augment, torch.Generator().manual_seed(batch_seed(4, 0, [1])))
    assert 0.85 <= warp <= 1.15 and warp != 1.0
    wave = load_audio(utts[1].audio)
    fbank = Fbank(FBANK)
    torch.testing.assert_close(feats, fbank(wave, mel_matrix(FBANK, warp)), rtol=0, atol=1e-4)
    assert (fbank(wave) - feats).abs().max() > 0.1
    again = SpeechCollator(utts, [[1]] * len(utts), fbank=FBANK, augment=augment, cmvn=stats, seed=4)([1]).feats[0]
    torch.testing.assert_close(again, feats, rtol=0, atol=0)
