"""One model across modalities (task ``unified``): ASR (speech -> source-language text), speech translation and
text translation trained together into one model (``models/unified.py``: modality adapters, shared encoder, one
tagged decoder over one vocabulary); multi-task batches by task sampling, per-task loss weights, per-task dev
losses and scores; adapter-only training; component-wise initialization from single-task model folders
(``tasks/unified_init.py``). ``Unified`` (``transduce/unified.py``) is its inference object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from transduce.config import SECTIONS, RunConfig
from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.speech_batching import SpeechCollator, utterance_frames
from transduce.data.tokenizer import Tokenizer
from transduce.data.unified_batching import (
    Example,
    UnifiedBatch,
    UnifiedCollator,
    iterate_unified,
    mixed_batches,
    sample_epoch,
    task_probabilities,
)
from transduce.errors import ConfigError
from transduce.models.adapters import ImageFrontEnd, SpeechFrontEnd
from transduce.models.folder import ModelFolder
from transduce.models.unified import Tags, UnifiedModel, UnifiedModelConfig, build_unified, tied_aliases, trainable
from transduce.speech_config import fbank_config
from transduce.tasks.ocr import pixel_stats
from transduce.tasks.speech import augment_config, estimate_cmvn
from transduce.tasks.unified_data import (
    UnifiedDataConfig,
    check_data,
    no_examples,
    read_sources,
    speech_examples,
    text_examples,
    tokenizer,
)
from transduce.tasks.unified_images import image_collator, image_examples
from transduce.tasks.unified_loss import TaskWindow, UnifiedLoss, bits, dev_score, dev_scores, greedy
from transduce.train.distributed import DistContext
from transduce.unified import JOBS, TOKENIZER, Unified, UnifiedDecodeConfig, model_languages

CMVN = "cmvn.json"


@dataclass(frozen=True)
class UnifiedKind:
    """The ``unified`` task kind, read by ``Unified``."""

    name: str = "unified"
    description: str = "a unified (multi-task, multi-modal) model"
    inference: type = field(default=Unified)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "data": UnifiedDataConfig, "model": UnifiedModelConfig, "decode": UnifiedDecodeConfig}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return [folder / TOKENIZER]

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return tied_aliases(cfg.model)

    def build_model(self, cfg: RunConfig, folder: Path) -> UnifiedModel:
        """An untrained model for the tokenizer in ``folder`` (the statistics come with the weights)."""
        return _build(cfg, Tokenizer(folder / TOKENIZER), None)

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> UnifiedTask:
        return UnifiedTask(cfg, run_dir, log)

    def load(self, folder: ModelFolder, device: str = "cpu") -> Unified:
        return Unified.load(folder.path, device=device)

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """``transduce info`` lines: inputs, tasks, languages, sizes."""
        m, d = cfg.model, cfg.data
        model = folder.load_into(self.build_model(cfg, folder.path), self.tied_aliases(cfg))
        assert isinstance(model, UnifiedModel)
        total = sum(p.numel() for p in model.parameters())
        adapters = sum(p.numel() for name in m.inputs for p in model.modality(name).adapter.parameters())
        jobs = ", ".join(f"{j} ({JOBS[j][0]} -> {d.src_lang if JOBS[j][1] == 'transcribe' else '/'.join(d.langs)})"
                         for j in d.tasks)
        return [f"unified: inputs {', '.join(m.inputs)}; shared {m.encoder} encoder {m.layers} layers d={m.dim}, "
                f"{m.decoder_layers}-layer decoder d={m.decoder_dim or m.dim}; {total / 1e6:.2f}M parameters "
                f"({adapters / 1e6:.3f}M in adapters)",
                f"tasks: {jobs}; languages {', '.join(model_languages(cfg))}; tags <transcribe>/<translate> then "
                f"the language; {len(Tokenizer(folder.path / TOKENIZER))} pieces",
                f"decodes by default with beam {cfg.decode.beam}, length penalty {cfg.decode.len_penalty}"]


UNIFIED = UnifiedKind()


def _build(cfg: RunConfig, tok: Tokenizer, cmvn: CMVNStats | None, pixels: tuple[float, float] | None = None
           ) -> UnifiedModel:
    try:
        model = build_unified(cfg.model, len(tok), len(model_languages(cfg)))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cmvn is not None and "speech" in model.modalities:
        front = model.modality("speech").front
        assert isinstance(front, SpeechFrontEnd)
        front.normalizer.load_state_dict(GlobalCMVN.from_stats(cmvn).state_dict())
    if pixels is not None and "image" in model.modalities:
        image = model.modality("image").front
        assert isinstance(image, ImageFrontEnd)
        image.frontend.set_stats(*pixels)
    return model


class UnifiedTask:
    """A unified run's examples (speech first, then images, then text), tokenizer, CMVN and pixel statistics, loss
    and dev evaluation."""

    data_keys: tuple[str, ...] = ("tokenizer", "vocab_size", "sample_rate", "num_mel_bins", "tasks", "src_lang",
                                  "langs")

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        from transduce.tasks.unified_init import given_tokenizer

        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        data: UnifiedDataConfig = cfg.data
        check_data(data, tuple(cfg.model.inputs))
        train, valid = read_sources(data, True), read_sources(data, False)
        given, where = given_tokenizer(cfg)
        self.tok = tokenizer(data, run_dir, train, given, where, log)
        self.tags = Tags(len(self.tok), model_languages(cfg))
        self.fbank = fbank_config(data)
        self.cmvn = self._cmvn(train.speech) if train.speech else None
        self.pixels = (pixel_stats(run_dir, train.images, SimpleNamespace(stats_images=data.stats_images,
                                   height=cfg.model.image_height), log) if train.images else None)
        self.train = self._examples(train, 0, data.max_duration)
        self.valid = self._examples(valid, data.valid_limit, math.inf)
        if not self.train:
            raise no_examples(data)
        sizes = [sum(e.task == t for e in self.train) for t in range(len(data.tasks))]
        self.probabilities = task_probabilities(sizes, data.task_weights, data.temperature)
        self.window = TaskWindow(data.tasks)
        log("train: " + ", ".join(f"{job} {n} examples (p={p:.2f})" for job, n, p in
                                  zip(data.tasks, sizes, self.probabilities, strict=True)))

    def _cmvn(self, utts: list) -> CMVNStats:
        path = self.run_dir / CMVN
        if path.is_file():
            return CMVNStats.from_dict(json.loads(path.read_text()))
        stats = estimate_cmvn([u.utt for u in utts], self.cfg.data, self.log, self.cfg.model.utterance_norm)
        path.write_text(json.dumps(stats.to_dict()))
        return stats

    def _examples(self, sources: Any, per_task: int, max_duration: float) -> list[Example]:
        """Speech examples first (the collator's speech part), then image ones, then text ones; speech longer than
        ``max_duration`` seconds left out."""
        limit = self.cfg.model.max_positions - 2
        speech = speech_examples(self.cfg.data, sources.speech, self.tok, self.tags, limit=limit, per_task=per_task,
                                 max_duration=max_duration,
                                 frames=lambda u: utterance_frames([u], self.fbank)[0],
                                 subsampling=self.cfg.model.subsampling)
        images = image_examples(self.cfg.data, sources.images, self.tok, self.tags, limit=limit, per_task=per_task,
                                subsampling=self.cfg.model.image_subsampling)
        return speech + images + text_examples(self.cfg.data, sources.text, self.tok, self.tags, limit=limit,
                                               per_task=per_task)

    def build_model(self) -> UnifiedModel:
        return _build(self.cfg, self.tok, self.cmvn, self.pixels)

    def init_components(self, model: nn.Module) -> None:
        """model.init_encoder_from / init_decoder_from (not after train.init_from, which set every weight), then
        model.train_only (with the trained count logged)."""
        from transduce.tasks.unified_init import init_components

        assert isinstance(model, UnifiedModel)
        m = self.cfg.model
        if self.cfg.train.init_from and (m.init_encoder_from or m.init_decoder_from):
            self.log(f"train.init_from {self.cfg.train.init_from} set every weight: model.init_encoder_from and "
                     f"model.init_decoder_from are not applied")  # e.g. fine-tuning a model whose config names them
        elif not self.cfg.train.init_from:
            init_components(model, self.cfg, self.log)
            if m.init_encoder_from:
                self._start_speech_adapter(model)
        parts = tuple(self.cfg.model.train_only)
        if "tags" in parts and self.cfg.optim.weight_decay:
            raise ConfigError(f"model.train_only: tags trains rows of the decoder embedding, whose other rows "
                              f"optim.weight_decay {self.cfg.optim.weight_decay} would move; set it to 0")
        if parts:
            count = trainable(model, parts, len(self.tok))
            total = sum(p.numel() for p in model.parameters())
            self.log(f"model.train_only {', '.join(parts)}: training {count} of {total} parameters "
                     f"({100 * count / total:.2f}%), the others frozen")

    def _start_speech_adapter(self, model: UnifiedModel, count: int = 64) -> None:
        """The speech adapter as the identity, calibrated on the first ``count`` training utterances (plain)."""
        from transduce.tasks.unified_init import start_speech_adapter

        spoken = [e for e in self.train if e.utt is not None][:count]
        if not spoken:
            return
        batch = SpeechCollator([e.utt for e in spoken], [e.transcript for e in spoken],  # type: ignore[misc]
                               fbank=self.fbank)(range(len(spoken)))
        start_speech_adapter(model, batch.feats, batch.feat_lens)
        self.log(f"model.init_encoder_from: the speech adapter starts as the identity (calibrated on "
                 f"{len(spoken)} training utterances)")

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> UnifiedLoss:
        weights = self.cfg.data.loss_weights or (1.0,) * len(self.cfg.data.tasks)
        return UnifiedLoss(model, autocast, loss_weights=weights, ctc_weight=self.cfg.model.ctc_weight,  # type: ignore[arg-type]
                           label_smoothing=self.cfg.train.label_smoothing, window=self.window)

    def train_log(self) -> dict[str, float]:
        """Per-task training nll (bits per target token) over the batches since the last train log line."""
        return self.window.take()

    def _layout(self, examples: list[Example]) -> tuple[list[int], list[int]]:
        return [e.cost for e in examples], [e.part for e in examples]

    def batches(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        chosen = sample_epoch([e.task for e in self.train], self.probabilities, seed=t.seed, epoch=epoch)
        return mixed_batches(chosen, *self._layout(self.train), max_tokens=t.max_tokens, seed=t.seed, epoch=epoch)

    def collator(self, train: bool, epoch: int = 0) -> UnifiedCollator:
        """Training batches (speech augmented, images width-jittered) or dev batches (plain)."""
        examples = self.train if train else self.valid
        spoken = [e for e in examples if e.utt is not None]
        speech = None
        if spoken:
            utts, transcripts = [e.utt for e in spoken], [e.transcript for e in spoken]
            augment = augment_config(self.cfg.data) if train else None
            speech = SpeechCollator(utts, transcripts, fbank=self.fbank, augment=augment,  # type: ignore[arg-type]
                                    cmvn=self.cmvn if train else None, utterance_norm=self.cfg.model.utterance_norm,
                                    seed=self.cfg.train.seed, epoch=epoch)
        images = image_collator(examples, self.cfg.model.image_height, jitter=self.cfg.data.width_jitter if train
                                else 0.0, seed=self.cfg.train.seed, epoch=epoch)
        return UnifiedCollator(examples, speech, self.cfg.data.num_mel_bins, images)

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[UnifiedBatch]:
        return iterate_unified(batches, self.collator(True, epoch), start=start, num_workers=self.cfg.data.num_workers)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev loss per task (bits per target token) and, with train.eval_bleu, greedy WER (asr) and BLEU per task
        and language; the score is the mean of the BLEUs and 100 - WER (else minus the loss)."""
        assert isinstance(model, UnifiedModel)
        model.eval()
        device = next(model.parameters()).device
        loss = self.loss_module(model, autocast)
        loss.label_smoothing = 0.0
        batches = mixed_batches(list(range(len(self.valid))), *self._layout(self.valid),
                                max_tokens=self.cfg.train.max_tokens, seed=0, epoch=0, shuffle=False)
        jobs = self.cfg.data.tasks
        sums = [0.0] * (2 * len(jobs))  # nll, tokens per task
        decoded: list[tuple[int, list[int]]] = []
        forbidden = self.tags.ids().to(device)
        for batch in iterate_unified(dist.shard(batches), self.collator(False), num_workers=self.cfg.data.num_workers):
            batch = batch.to(device)
            for t, (_, nll) in loss.per_task(*batch.inputs()).items():
                sums[2 * t] += float(nll)
            for out, tasks in ((batch.speech_out, batch.speech_task), (batch.text_out, batch.text_task),
                               (batch.image_out, batch.image_task)):
                for t in range(len(jobs)):
                    sums[2 * t + 1] += float(((out != 0) & (tasks[:, None] == t)).sum())
            if self.cfg.train.eval_bleu:
                decoded += greedy(model, batch, forbidden, self.cfg.decode)
        sums = dist.sum(sums, device)
        result: dict[str, Any] = {"loss": bits(sum(sums[::2]), sum(sums[1::2]))}
        result |= {f"loss_{job}": bits(sums[2 * t], sums[2 * t + 1]) for t, job in enumerate(jobs) if sums[2 * t + 1]}
        if self.cfg.train.eval_bleu:
            outputs = dict(p for part in dist.gather(decoded) for p in part)
            result |= dev_scores(self.valid, outputs, self.tok, jobs)
        return result, dev_score(result)
