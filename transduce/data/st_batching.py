"""Speech translation batches: a speech batch (features + transcript pieces for CTC) and the decoder's teacher-forcing
input and output (language tag first, EOS last).

Dimension letters: B examples, T feature frames, F mel bins, U transcript tokens, Y target tokens + 1.
An example is one (utterance, target language) pair: a multilingual manifest line gives one per language. The
speech side (audio, augmentation, features) is ``SpeechCollator``'s, so batches are reproducible from
(seed, epoch, indices) as speech batches are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from transduce.data.batching import pad
from transduce.data.speech_batching import SpeechCollator
from transduce.data.tokenizer import EOS, PAD


@dataclass
class STBatch:
    """feats (B, T, F) raw log-mel; transcripts (B, U) PAD-padded CTC targets; tgt_in (B, Y) tag + pieces,
    tgt_out (B, Y) pieces + EOS, both PAD-padded."""

    feats: Tensor
    feat_lens: Tensor
    transcripts: Tensor
    transcript_lens: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    indices: Tensor

    @property
    def num_tokens(self) -> int:
        """Target tokens the decoder predicts (EOS included): the loss normalizer."""
        return int((self.tgt_out != PAD).sum())

    def inputs(self) -> tuple[Tensor, ...]:
        """Arguments of the training loss module."""
        return self.feats, self.feat_lens, self.transcripts, self.transcript_lens, self.tgt_in, self.tgt_out

    def to(self, device: torch.device | str) -> STBatch:
        return STBatch(*(t.to(device, non_blocking=True) for t in (
            self.feats, self.feat_lens, self.transcripts, self.transcript_lens, self.tgt_in, self.tgt_out,
            self.indices)))


def decoder_pair(tag: int, pieces: Sequence[int]) -> tuple[list[int], list[int]]:
    """A target's teacher-forcing input (tag + pieces) and output (pieces + EOS)."""
    return [tag, *pieces], [*pieces, EOS]


class STCollator:
    """indices -> STBatch: the speech side from a ``SpeechCollator`` over the examples' utterances and
    transcripts, the decoder side from ``targets`` (each example's (tag, pieces)). A plain object, so loader
    workers can pickle it."""

    def __init__(self, speech: SpeechCollator, targets: Sequence[tuple[int, list[int]]]) -> None:
        self.speech, self.targets = speech, targets
        self.utts = speech.utts  # what iterate_speech sizes its index dataset by

    def __call__(self, indices: Sequence[int]) -> STBatch:
        sb = self.speech(indices)
        pairs = [decoder_pair(*self.targets[i]) for i in indices]
        return STBatch(sb.feats, sb.feat_lens, sb.targets, sb.target_lens, pad([p[0] for p in pairs], PAD),
                       pad([p[1] for p in pairs], PAD), sb.indices)
