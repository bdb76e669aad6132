"""Speech batches by total frames with length bucketing; audio read, augmented and featurized
while batches are collated (in loader workers when asked), never a whole corpus in memory.

Dimension letters: B utterances, T feature frames, F mel bins, U target tokens.
Batches depend only on (durations, budget, seed, epoch), and each batch's augmentation only on
(seed, epoch, its utterance indices): runs are identical whatever ``num_workers`` is, and a resumed
run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from transduce.data.audio import load_audio
from transduce.data.augment import AugmentConfig, augment_wave, sample_vtlp_warp, spec_augment
from transduce.data.batching import ignore_stop_signals, make_batches, pad
from transduce.data.cmvn import CMVNStats
from transduce.data.features import Fbank, FbankConfig, mel_matrix, num_frames
from transduce.data.manifest import Utterance
from transduce.data.tokenizer import PAD
from transduce.nn.masks import padding_mask


@dataclass
class SpeechBatch:
    """feats (B, T, F) raw log-mel, zero-padded; targets (B, U) token ids padded with PAD (= CTC blank)."""

    feats: Tensor
    feat_lens: Tensor
    targets: Tensor
    target_lens: Tensor
    indices: Tensor

    @property
    def feat_mask(self) -> Tensor:
        """(B, T) bool, True on real frames."""
        return padding_mask(self.feat_lens, self.feats.size(1))

    @property
    def num_tokens(self) -> int:
        return int(self.target_lens.sum())

    def inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Arguments of the training loss module."""
        return self.feats, self.feat_lens, self.targets, self.target_lens

    def to(self, device: torch.device | str) -> SpeechBatch:
        return SpeechBatch(*(t.to(device, non_blocking=True) for t in (
            self.feats, self.feat_lens, self.targets, self.target_lens, self.indices)))


def pad_features(feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """B tensors (T_i, F) -> (B, T, F) zero-padded and (B,) lengths."""
    lens = torch.tensor([f.size(0) for f in feats])
    out = torch.zeros(len(feats), int(lens.max()), feats[0].size(1))
    for i, f in enumerate(feats):
        out[i, : f.size(0)] = f
    return out, lens


def batch_seed(seed: int, epoch: int, indices: Sequence[int]) -> int:
    """A seed that depends only on the run seed, the epoch and which utterances are batched."""
    return zlib.crc32(repr((seed, epoch, list(indices))).encode())


class SpeechCollator:
    """indices -> SpeechBatch: load audio, augment waves (speed, noise), compute filterbanks,
    SpecAugment in normalized space (masks hit the training mean). A plain object, so loader
    workers can pickle it."""

    def __init__(self, utts: Sequence[Utterance], targets: Sequence[list[int]], *, fbank: FbankConfig,
                 augment: AugmentConfig | None = None, cmvn: CMVNStats | None = None,
                 utterance_norm: bool = False, seed: int = 0, epoch: int = 0) -> None:
        """``cmvn`` (and ``utterance_norm``): how the model normalizes, so SpecAugment masks land on 0
        after normalization."""
        if augment is not None and cmvn is None:
            raise ValueError("SpecAugment needs the CMVN statistics (masks are set to the mean)")
        self.utts, self.targets, self.augment = utts, targets, augment
        self.fbank = Fbank(fbank)
        self.sample_rate = fbank.sample_rate
        self.mean = cmvn.mean.float() if cmvn is not None else None
        self.std = cmvn.std.float() if cmvn is not None else None
        self.seed, self.epoch = seed, epoch
        self.utterance_norm = utterance_norm

    def features(self, i: int, generator: torch.Generator | None) -> Tensor:
        """(T, F) filterbank of utterance ``i`` (augmented when a generator is given)."""
        wave = load_audio(self.utts[i].audio, self.sample_rate)
        mel = None
        if generator is not None and self.augment is not None:
            wave = augment_wave(wave, self.sample_rate, self.augment, generator)
            warp = sample_vtlp_warp(self.augment, generator)
            mel = None if warp == 1.0 else mel_matrix(self.fbank.cfg, warp)
        with torch.no_grad():
            feats = self.fbank(wave, mel)
        if generator is not None and self.augment is not None and feats.size(0) > 0:
            assert self.mean is not None and self.std is not None
            offset = self.mean + (feats.mean(0) if self.utterance_norm else 0.0)
            normalized = spec_augment((feats - offset) / self.std, self.augment.spec, generator)
            feats = normalized * self.std + offset
        return feats

    def __call__(self, indices: Sequence[int]) -> SpeechBatch:
        generator = None
        if self.augment is not None:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, self.epoch, indices))
        feats, feat_lens = pad_features([self.features(i, generator) for i in indices])
        targets = [self.targets[i] for i in indices]
        return SpeechBatch(feats=feats, feat_lens=feat_lens, targets=pad(targets, PAD),
                           target_lens=torch.tensor([len(t) for t in targets]),
                           indices=torch.as_tensor(list(indices)))


def utterance_frames(utts: Sequence[Utterance], fbank: FbankConfig) -> list[int]:
    """Feature frames of each utterance, from the manifest durations (no audio read)."""
    return [num_frames(round(u.duration * fbank.sample_rate), fbank) for u in utts]


def make_speech_batches(frames: Sequence[int], *, max_frames: int, seed: int, epoch: int,
                        shuffle: bool = True) -> list[list[int]]:
    """Bucket by length; each batch's padded frames (utterances x longest) stay within ``max_frames``."""
    return make_batches(frames, [0] * len(frames), max_tokens=max_frames, seed=seed, epoch=epoch, shuffle=shuffle)


class _Indices(Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> int:
        return i


BatchT = TypeVar("BatchT", covariant=True)


class Collator(Protocol[BatchT]):
    """indices -> a batch of ``utts`` (``SpeechCollator``, and collators that wrap one)."""

    @property
    def utts(self) -> Sequence[Utterance]: ...

    def __call__(self, indices: Sequence[int]) -> BatchT: ...


def iterate_speech(batches: list[list[int]], collator: Collator[BatchT], *, start: int = 0,
                   num_workers: int = 0) -> Iterator[BatchT]:
    """Yield collated ``batches[start:]``, optionally collated by worker processes (same batches)."""
    todo = batches[start:]
    if num_workers == 0:
        for indices in todo:
            yield collator(indices)
        return
    loader = DataLoader(_Indices(len(collator.utts)), batch_sampler=todo, num_workers=num_workers,
                        collate_fn=collator, persistent_workers=False, worker_init_fn=ignore_stop_signals)
    yield from loader
