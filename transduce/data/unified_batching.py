"""Multi-task batches of the unified model: examples of several tasks (ASR, speech translation, text translation),
drawn per epoch by task sampling probabilities, cut into batches by padded encoder positions, each batch holding
a speech part, an image part and a text part (any may be empty) with every example's own tag prefix.

Dimension letters: B examples, Bs speech examples, Bi image examples, Bt text examples, T feature frames, F mel
bins, W image columns, P image rows, U transcript pieces, S source pieces (+ EOS), Y target pieces + 2 tags
(decoder input) or + EOS (output).

Everything depends only on (examples, probabilities, budget, seed, epoch) and each speech part's augmentation on
(seed, epoch, its indices), as speech batches: runs are reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from transduce.data.batching import ignore_stop_signals, pad
from transduce.data.images import ImageCollator, ImageLine
from transduce.data.manifest import Utterance
from transduce.data.speech_batching import SpeechCollator
from transduce.data.tokenizer import EOS, PAD


@dataclass(frozen=True)
class Example:
    """One training or dev example of one task."""

    task: int
    """Index of its task in the run's task list (data.tasks)."""
    utt: Utterance | None
    """The audio (speech examples), else None."""
    source: list[int]
    """Source pieces (text examples), else empty."""
    transcript: list[int]
    """English transcript pieces for the CTC head (speech examples), else empty."""
    prefix: tuple[int, ...]
    """The decoder's tags: task, target language."""
    target: list[int]
    """Target pieces (without tags and EOS)."""
    lang: str
    """Target language."""
    text: str
    """The target sentence (dev reference)."""
    cost: int
    """Encoder positions (speech: frames / subsampling; image: columns / subsampling; text: pieces + EOS), or the
    target's length if longer."""
    image: ImageLine | None = None
    """The text-line image (image examples), else None."""

    @property
    def part(self) -> int:
        """Which part of a batch it goes to: 0 text, 1 speech, 2 image."""
        return 1 if self.utt is not None else 2 if self.image is not None else 0


@dataclass
class UnifiedBatch:
    """The speech part: feats (Bs, T, F) raw log-mel, transcripts (Bs, U), speech_in/out (Bs, Y), speech_task (Bs,);
    the text part: src (Bt, S), text_in/out (Bt, Y), text_task (Bt,); the image part: images (Bi, W, P) pixel
    columns, image_in/out (Bi, Y), image_task (Bi,); all PAD-padded; indices (B,) in that order (speech, text,
    image)."""

    feats: Tensor
    feat_lens: Tensor
    transcripts: Tensor
    transcript_lens: Tensor
    speech_in: Tensor
    speech_out: Tensor
    speech_task: Tensor
    src: Tensor
    src_lens: Tensor
    text_in: Tensor
    text_out: Tensor
    text_task: Tensor
    images: Tensor
    image_lens: Tensor
    image_in: Tensor
    image_out: Tensor
    image_task: Tensor
    indices: Tensor

    @property
    def num_tokens(self) -> int:
        """Target tokens the decoder predicts (EOS included, tags not): the loss normalizer."""
        return int((self.speech_out != PAD).sum() + (self.text_out != PAD).sum() + (self.image_out != PAD).sum())

    def inputs(self) -> tuple[Tensor, ...]:
        """Arguments of the training loss module (``UnifiedLoss``)."""
        return (self.feats, self.feat_lens, self.transcripts, self.transcript_lens, self.speech_in, self.speech_out,
                self.speech_task, self.src, self.src_lens, self.text_in, self.text_out, self.text_task, self.images,
                self.image_lens, self.image_in, self.image_out, self.image_task)

    def to(self, device: torch.device | str) -> UnifiedBatch:
        return UnifiedBatch(*(t.to(device, non_blocking=True) for t in (*self.inputs(), self.indices)))


def _pad(seqs: Sequence[Sequence[int]]) -> Tensor:
    """``pad``, and a (0, 1) tensor for no sequences."""
    return pad(seqs, PAD) if seqs else torch.zeros(0, 1, dtype=torch.long)


def _decoder_side(examples: Sequence[Example]) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-forcing input (tags + pieces), output (pieces + EOS, PAD under the tags but the last) and tasks."""
    ins = [[*e.prefix, *e.target] for e in examples]
    outs = [[PAD] * (len(e.prefix) - 1) + [*e.target, EOS] for e in examples]
    return _pad(ins), _pad(outs), torch.tensor([e.task for e in examples], dtype=torch.long)


class UnifiedCollator:
    """indices -> UnifiedBatch. Speech examples come first in ``examples`` (indices < ``speech.utts``'s length),
    their audio collated by ``speech``, then image examples (the next ``images.utts``'s length), read by ``images``.
    A plain object, so loader workers can pickle it."""

    def __init__(self, examples: Sequence[Example], speech: SpeechCollator | None, mel_bins: int,
                 images: ImageCollator | None = None) -> None:
        self.examples, self.speech, self.mel_bins, self.images = examples, speech, mel_bins, images
        self.speech_count = 0 if speech is None else len(speech.utts)
        self.text_start = self.speech_count + (0 if images is None else len(images.utts))

    def _image_part(self, shown: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(images (Bi, W, P), widths, decoder input, output, tasks) of the image examples ``shown``."""
        if shown:
            assert self.images is not None
            ib = self.images([i - self.speech_count for i in shown])
            images, widths = ib.feats, ib.feat_lens
        else:
            height = 1 if self.images is None else self.images.height
            images, widths = torch.zeros(0, 1, height), torch.zeros(0, dtype=torch.long)
        return images, widths, *_decoder_side([self.examples[i] for i in shown])

    def __call__(self, indices: Sequence[int]) -> UnifiedBatch:
        spoken = [i for i in indices if i < self.speech_count]
        shown = [i for i in indices if self.speech_count <= i < self.text_start]
        written = [i for i in indices if i >= self.text_start]
        if spoken:
            assert self.speech is not None
            sb = self.speech(spoken)
            feats, feat_lens, transcripts, transcript_lens = sb.feats, sb.feat_lens, sb.targets, sb.target_lens
        else:
            feats, feat_lens = torch.zeros(0, 1, self.mel_bins), torch.zeros(0, dtype=torch.long)
            transcripts, transcript_lens = _pad([]), torch.zeros(0, dtype=torch.long)
        sources = [[*self.examples[i].source, EOS] for i in written]
        return UnifiedBatch(feats, feat_lens, transcripts, transcript_lens,
                            *_decoder_side([self.examples[i] for i in spoken]), _pad(sources),
                            torch.tensor([len(s) for s in sources], dtype=torch.long),
                            *_decoder_side([self.examples[i] for i in written]), *self._image_part(shown),
                            torch.as_tensor([*spoken, *written, *shown], dtype=torch.long))


def task_probabilities(sizes: Sequence[int], weights: Sequence[float], temperature: float) -> list[float]:
    """Sampling probability of each task: proportional to ``weights`` when given, else to size^(1/temperature)
    (1 = as the data comes, larger = flatter: temperature sampling as in multilingual NMT)."""
    raw = np.asarray(weights, dtype=float) if weights else np.asarray(sizes, dtype=float) ** (1.0 / temperature)
    return (raw / raw.sum()).tolist()


def sample_epoch(task_of: Sequence[int], probabilities: Sequence[float], *, seed: int, epoch: int) -> list[int]:
    """The example indices of one epoch: as many as there are examples, round(p_t * total) of task t, each task's
    examples in a fresh order per pass (repeated when its share is larger than its data, cut when smaller)."""
    rng = np.random.default_rng([seed, epoch, 7])
    tasks = np.asarray(task_of)
    chosen: list[int] = []
    for t, p in enumerate(probabilities):
        mine = np.flatnonzero(tasks == t)
        want = int(round(p * len(tasks)))
        if not len(mine) or not want:
            continue
        passes = -(-want // len(mine))
        chosen += np.concatenate([rng.permutation(mine) for _ in range(passes)])[:want].tolist()
    return chosen


def mixed_batches(chosen: Sequence[int], costs: Sequence[int], part: Sequence[int], *, max_tokens: int,
                  seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Bucket ``chosen`` by cost (ties broken at random) and cut into batches whose padded size (each part's
    examples x its longest, summed over the parts ``part`` names: 0 text, 1 speech (True), 2 image) stays within
    ``max_tokens``; order shuffled."""
    rng = np.random.default_rng([seed, epoch])
    picked = np.asarray(chosen, dtype=np.int64)
    tiebreak = rng.permutation(len(picked)) if shuffle else np.arange(len(picked))
    order = picked[np.lexsort((tiebreak, np.asarray(costs)[picked]))] if len(picked) else picked
    batches: list[list[int]] = []
    current: list[int] = []
    width, count = [0, 0, 0], [0, 0, 0]  # (text, speech, image) longest cost and examples
    for i in order.tolist():
        p = int(part[i])
        grown, counts = list(width), list(count)
        grown[p], counts[p] = max(width[p], costs[i]), count[p] + 1
        if current and sum(w * n for w, n in zip(grown, counts, strict=True)) > max_tokens:
            batches.append(current)
            current, grown, counts = [], [0, 0, 0], [0, 0, 0]
            grown[p], counts[p] = costs[i], 1
        current.append(i)
        width, count = grown, counts
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def iterate_unified(batches: list[list[int]], collator: UnifiedCollator, *, start: int = 0, num_workers: int = 0
                    ) -> Iterator[UnifiedBatch]:
    """Yield collated ``batches[start:]``, optionally collated by worker processes (the same batches)."""
    todo = batches[start:]
    if num_workers == 0:
        for indices in todo:
            yield collator(indices)
        return
    loader: DataLoader = DataLoader(range(len(collator.examples)), batch_sampler=todo,  # type: ignore[arg-type]
                        num_workers=num_workers, collate_fn=collator, persistent_workers=False,
                        worker_init_fn=ignore_stop_signals)
    yield from loader
