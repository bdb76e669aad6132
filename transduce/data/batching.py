"""Token-budget batches with length bucketing, padding and boolean masks.

Dimension letters: B sentences in the batch, S source length, T target length.
Batches depend only on (lengths, max_tokens, seed, epoch): loader workers collate them in
parallel but never change them, so runs are identical whatever ``num_workers`` is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.nn.masks import padding_mask


@dataclass
class Batch:
    """src (B, S) ids ending in EOS; tgt_in (B, T) = BOS + y; tgt_out (B, T) = y + EOS.
    Lengths count real tokens; padding is PAD."""

    src: Tensor
    src_lens: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lens: Tensor
    indices: Tensor

    @property
    def src_mask(self) -> Tensor:
        """(B, S) bool, True on real source tokens."""
        return padding_mask(self.src_lens, self.src.size(1))

    @property
    def tgt_mask(self) -> Tensor:
        """(B, T) bool, True on real target tokens."""
        return padding_mask(self.tgt_lens, self.tgt_out.size(1))

    @property
    def num_tokens(self) -> int:
        return int(self.tgt_lens.sum())

    def inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Arguments of the training loss module."""
        return self.src, self.src_lens, self.tgt_in, self.tgt_out

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (
            self.src, self.src_lens, self.tgt_in, self.tgt_out, self.tgt_lens, self.indices)))


def pad(seqs: Sequence[Sequence[int]], value: int = PAD) -> Tensor:
    """List of B id lists -> (B, max_len) LongTensor padded with ``value``."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(indices: Sequence[int], src: Sequence[list[int]], tgt: Sequence[list[int]]) -> Batch:
    """Build a padded batch from tokenized pairs (without BOS/EOS, added here)."""
    s = [src[i] + [EOS] for i in indices]
    t = [tgt[i] for i in indices]
    return Batch(
        src=pad(s),
        src_lens=torch.tensor([len(x) for x in s]),
        tgt_in=pad([[BOS] + x for x in t]),
        tgt_out=pad([x + [EOS] for x in t]),
        tgt_lens=torch.tensor([len(x) + 1 for x in t]),
        indices=torch.as_tensor(list(indices)),
    )


def make_batches(
    src_lens: Sequence[int], tgt_lens: Sequence[int], *, max_tokens: int, seed: int, epoch: int,
    shuffle: bool = True, max_sentences: int | None = None,
) -> list[list[int]]:
    """Bucket by length and cut into batches whose padded size (sentences x longest side,
    specials included) stays within ``max_tokens``; batch order shuffled by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    n = len(src_lens)
    src_a, tgt_a = np.asarray(src_lens) + 1, np.asarray(tgt_lens) + 1
    tiebreak = rng.permutation(n) if shuffle else np.arange(n)
    order = np.lexsort((tiebreak, src_a, tgt_a))  # by target, then source, then random
    longest = np.maximum(src_a, tgt_a)
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order.tolist():
        new_width = max(width, int(longest[i]))
        full = max_sentences is not None and len(current) >= max_sentences
        if current and (new_width * (len(current) + 1) > max_tokens or full):
            batches.append(current)
            current, new_width = [], int(longest[i])
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def ignore_stop_signals(_: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process, which checkpoints and then stops
    them (a signal sent to the whole process group must not kill a worker mid-epoch)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Pairs(Dataset):
    def __init__(self, src: Sequence[list[int]], tgt: Sequence[list[int]]) -> None:
        self.src, self.tgt = src, tgt

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> int:
        return i


def iterate_batches(
    batches: list[list[int]], src: Sequence[list[int]], tgt: Sequence[list[int]], *,
    start: int = 0, num_workers: int = 0,
) -> Iterator[Batch]:
    """Yield collated batches ``batches[start:]``, optionally collated by worker processes."""
    todo = batches[start:]
    if num_workers == 0:
        for indices in todo:
            yield collate(indices, src, tgt)
        return
    loader = DataLoader(
        _Pairs(src, tgt), batch_sampler=todo, num_workers=num_workers,
        collate_fn=lambda idx: collate(idx, src, tgt), worker_init_fn=ignore_stop_signals,
    )
    yield from loader
