"""The unified task's training loss (each task's label-smoothed cross-entropy, plus CTC on speech examples, weighted
per task) and its dev evaluation (loss per task, greedy WER for ASR, BLEU per language for speech and text
translation).

Dimension letters: B examples of a part, N encoder positions, Y decoder positions, V vocabulary + tags.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from transduce.data.tokenizer import PAD, Tokenizer
from transduce.data.unified_batching import Example, UnifiedBatch
from transduce.decoding.hypothesis import max_lengths
from transduce.decoding.prefix import prefix_beam_search
from transduce.metrics.bleu import sacre_scores
from transduce.metrics.wer import wer
from transduce.models.ctc import ctc_loss
from transduce.models.unified import UnifiedModel
from transduce.train.loss import projected_label_smoothed_nll
from transduce.unified import JOBS, UnifiedDecodeConfig

Part = tuple[str, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
"""(modality, inputs, input lengths, decoder input, decoder output, task per row, transcripts, their lengths)."""


def parts(inputs: Sequence[Tensor]) -> Iterator[Part]:
    """The non-empty speech, text and image parts of ``UnifiedBatch.inputs()`` (in that order)."""
    feats, feat_lens, transcripts, transcript_lens, s_in, s_out, s_task = inputs[:7]
    src, src_lens, t_in, t_out, t_task, images, widths, i_in, i_out, i_task = inputs[7:]
    if feats.size(0):
        yield "speech", feats, feat_lens, s_in, s_out, s_task, transcripts, transcript_lens
    if src.size(0):
        yield "text", src, src_lens, t_in, t_out, t_task, transcripts[:0], transcript_lens[:0]
    if images.size(0):
        yield "image", images, widths, i_in, i_out, i_task, transcripts[:0], transcript_lens[:0]


class TaskWindow:
    """Each task's training cross-entropy nll and target tokens since the last ``take`` (this process's batches):
    the per-task numbers of the train log lines."""

    def __init__(self, jobs: Sequence[str]) -> None:
        self.jobs = list(jobs)
        self.sums: dict[int, tuple[Tensor | float, Tensor | float]] = {}  # task -> (nll sum, target tokens)

    def add(self, task: int, nll: Tensor, tokens: Tensor) -> None:
        before = self.sums.get(task, (0.0, 0.0))
        self.sums[task] = (before[0] + nll.detach(), before[1] + tokens)

    def take(self) -> dict[str, float]:
        """{"nll_<job>": bits per target token} of the tasks seen since the last call; then empty."""
        found = {f"nll_{self.jobs[t]}": bits(float(n), float(k)) for t, (n, k) in sorted(self.sums.items())}
        self.sums = {}
        return found


class UnifiedLoss(nn.Module):
    """A unified model and its loss as one module for DDP: ``UnifiedBatch.inputs()`` -> (sum over tasks of
    loss_weight[t] * task t's loss sum, the cross-entropy nll sum detached). A speech example's loss is
    ctc_weight * CTC + (1 - ctc_weight) * cross-entropy. With a ``window``, training forward passes (model in
    train mode, gradients on) add each task's nll and target tokens to it."""

    def __init__(self, model: UnifiedModel, autocast: AbstractContextManager, *, loss_weights: Sequence[float],
                 ctc_weight: float, label_smoothing: float, window: TaskWindow | None = None) -> None:
        super().__init__()
        self.model, self.autocast, self.loss_weights = model, autocast, list(loss_weights)
        self.ctc_weight, self.label_smoothing, self.window = ctc_weight, label_smoothing, window

    def per_task(self, *inputs: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
        """{task index: (its loss sum, its nll sum)} over the batch."""
        out: dict[int, tuple[Tensor, Tensor]] = {}
        for modality, x, x_lens, tgt_in, tgt_out, tasks, transcripts, transcript_lens in parts(inputs):
            with self.autocast:
                memory, hidden, lens = self.model.encode_for_loss(x, x_lens, modality=modality)
                features, _ = self.model.decoder.features(tgt_in, memory, lens)  # (B, Y, E)
            for task in tasks.unique().tolist():
                rows = (tasks == task).nonzero()[:, 0]
                ce, nll = projected_label_smoothed_nll(features[rows], self.model.decoder.output.weight,
                                                       tgt_out[rows], epsilon=self.label_smoothing, ignore_index=PAD)
                w = self.ctc_weight if modality == "speech" else 0.0
                if w:
                    with self.autocast:  # the head in the encoder's precision; log-probs come out fp32
                        log_probs = self.model.ctc_log_probs(hidden[rows])  # (B_t, N, W)
                    ctc = ctc_loss(log_probs, lens[rows], transcripts[rows], transcript_lens[rows])
                    ce = w * ctc + (1 - w) * ce
                before = out.get(task, (ce.new_zeros(()), nll.new_zeros(())))
                out[task] = (before[0] + ce, before[1] + nll.detach())
                if self.window is not None and self.model.training and torch.is_grad_enabled():
                    self.window.add(task, nll, (tgt_out[rows] != PAD).sum())
        return out

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        found = self.per_task(*inputs)
        loss = sum((self.loss_weights[t] * v[0] for t, v in found.items()), inputs[0].new_zeros(()))
        nll = sum((v[1] for v in found.values()), inputs[0].new_zeros(()))
        return loss, nll


def greedy(model: UnifiedModel, batch: UnifiedBatch, forbidden: Tensor, decode: UnifiedDecodeConfig
           ) -> list[tuple[int, list[int]]]:
    """(example index, greedy output pieces) of each example of a dev batch, each forced to its tags."""
    found: list[tuple[int, list[int]]] = []
    indices = batch.indices.tolist()
    offset = 0
    for modality, x, x_lens, tgt_in, *_ in parts(batch.inputs()):
        memory, lens = model.encode(x, x_lens, modality=modality)
        a = decode.text_max_len_a if modality == "text" else decode.max_len_a
        prefixes = tgt_in[:, :2]  # (B, 2) the tags
        hyps = prefix_beam_search(model, memory.float(), lens, prefixes, forbidden, max_lengths(lens, a,
                                  decode.max_len_b), beam=1)
        found += [(indices[offset + i], h[0].tokens if h else []) for i, h in enumerate(hyps)]
        offset += x.size(0)
    return found


def dev_scores(examples: Sequence[Example], outputs: dict[int, list[int]], tok: Tokenizer, tasks: Sequence[str]
               ) -> dict[str, float]:
    """WER of the asr examples (wer) and of the ocr ones (wer_ocr), BLEU of each (st|mt|imt, language), and their
    mean ``bleu``."""
    texts = tok.decode([outputs[i] for i in range(len(examples))])
    result: dict[str, float] = {}
    for t, job in enumerate(tasks):
        mine = [i for i, e in enumerate(examples) if e.task == t]
        if JOBS[job][1] == "transcribe" and mine:
            key = "wer" if job == "asr" else f"wer_{job}"
            result[key] = round(wer([texts[i] for i in mine], [examples[i].text for i in mine]), 2)
            continue
        for lang in dict.fromkeys(examples[i].lang for i in mine):
            chosen = [i for i in mine if examples[i].lang == lang]
            result[f"bleu_{job}_{lang}"] = float(sacre_scores([texts[i] for i in chosen],
                                                              [examples[i].text for i in chosen])["bleu"])
    bleus = [v for k, v in result.items() if k.startswith("bleu_")]
    if bleus:
        result["bleu"] = round(sum(bleus) / len(bleus), 2)
    return result


def dev_score(result: dict[str, Any]) -> float:
    """What early stopping maximizes: the mean of the BLEUs and of 100 - WER, over those reported."""
    values = [v for k, v in result.items() if k.startswith("bleu_")]
    values += [100.0 - v for k, v in result.items() if k == "wer" or k.startswith("wer_")]
    return sum(values) / len(values) if values else -result["loss"]


def bits(nll: float, tokens: float) -> float:
    """A summed nll over ``tokens`` -> bits per token."""
    return round(nll / max(tokens, 1.0) / math.log(2), 4)
