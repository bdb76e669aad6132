"""Optical character recognition of text-line images (task ``ocr``): the speech ``ctc`` task's CTC or hybrid
CTC/attention model and training with the image front end (``nn/image_frontend.py``) in place of filterbanks,
CMVN and subsampling. Image manifests (``data/images.py``), a character/subword tokenizer, pixel statistics
estimated on the training images (stored with the weights), width-budget batches with width jitter, the CTC
(+ attention) loss, dev loss + WER/CER; ``ImageRecognizer`` for inference."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transduce.config import SECTIONS, ManifestDataConfig, RunConfig
from transduce.data.images import ImageCollator, ImageLine, load_line_image, read_image_manifest, read_image_manifests
from transduce.data.speech_batching import SpeechBatch, iterate_speech, make_speech_batches
from transduce.data.tokenizer import Tokenizer
from transduce.errors import ConfigError, DataError
from transduce.models.ctc import CTCModel, CTCModelConfig, build_ctc, tied_aliases
from transduce.models.folder import ModelFolder
from transduce.nn.image_frontend import WIDTH_LAYOUTS, ImageFrontend, image_stats
from transduce.read_images import ImageRecognizer
from transduce.speech_config import CTCDecodeConfig
from transduce.tasks.speech import TOKENIZER, ctc_emittable, evaluate_ctc, transcript_tokenizer
from transduce.train.distributed import DistContext
from transduce.train.loss import CTCLoss

STATS = "image_stats.json"


@dataclass(kw_only=True)
class ImageDataConfig(ManifestDataConfig):
    """Where the image manifests live (``transduce data text-images``), how transcripts are tokenized and images
    are read (task: ocr)."""

    height: int = 32
    """Image height in pixels (images are scaled to it); must equal model.input_dim."""
    max_width: int = 4096
    """Drop training images wider than this (pixels at ``height``)."""
    stats_images: int = 500
    """Training images the pixel mean/std are estimated on."""
    width_jitter: float = 0.1
    """Training images are stretched along the width by a random factor in [1 - j, 1 + j] (0 = off)."""


@dataclass(frozen=True)
class OCRKind:
    """The ``ocr`` task kind: line images into a CTC or hybrid CTC/attention model, read by ``ImageRecognizer``."""

    name: str = "ocr"
    description: str = "an OCR model (text-line images)"
    inference: type = field(default=ImageRecognizer)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "data": ImageDataConfig, "model": CTCModelConfig, "decode": CTCDecodeConfig}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return [folder / TOKENIZER]

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return tied_aliases(cfg.model)

    def build_model(self, cfg: RunConfig, folder: Path) -> CTCModel:
        """An untrained model for the tokenizer in ``folder`` (its pixel statistics come with the weights)."""
        return build_ocr(cfg, len(Tokenizer(folder / TOKENIZER)))

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> OCRTask:
        return OCRTask(cfg, run_dir, log)

    def load(self, folder: ModelFolder, device: str = "cpu") -> ImageRecognizer:
        recognizer = ImageRecognizer.load(folder.path, device=device)
        assert isinstance(recognizer, ImageRecognizer)
        return recognizer

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """``transduce info`` lines."""
        vocab, m = len(Tokenizer(folder.path / TOKENIZER)), cfg.model
        model = build_ocr(cfg, vocab)
        folder.load_into(model, self.tied_aliases(cfg))
        front = model.encoder.subsampling
        assert isinstance(front, ImageFrontend)
        lines = [f"{m.encoder} CTC encoder over {cfg.data.height}-pixel line images: {m.layers} layers, d={m.dim}, "
                 f"{m.heads} heads, width reduced {m.subsampling}x, "
                 f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters",
                 f"pixel mean {float(front.mean):.4f}, std {float(front.std):.4f} (training images)"]
        if m.decoder_layers:
            lines.append(f"hybrid CTC/attention: {m.decoder_layers}-layer attention decoder, ctc_weight {m.ctc_weight}")
        lines.append(f"{vocab} {cfg.data.tokenizer} tokens; decodes by default with {cfg.decode.describe()}")
        return lines


OCR = OCRKind()


def image_front_end(cfg: RunConfig, stats: tuple[float, float] | None = None) -> ImageFrontend:
    """The image front end of an image model's config (``data.height`` rows, width reduced ``model.subsampling``
    times, ``model.subsampling_channels``) with the training images' pixel ``stats`` (else loaded with the
    weights); ConfigErrors name the key."""
    m = cfg.model
    if m.input_dim != cfg.data.height:
        raise ConfigError(f"model.input_dim: an image model reads image columns of data.height {cfg.data.height} "
                          f"pixels; set it to {cfg.data.height}, got {m.input_dim}")
    if m.subsampling not in WIDTH_LAYOUTS:
        raise ConfigError(f"model.subsampling: an image model reduces the width by one of {sorted(WIDTH_LAYOUTS)}, "
                          f"got {m.subsampling}")
    if cfg.data.height < 8:
        raise ConfigError(f"data.height: at least 8 pixels, got {cfg.data.height}")
    front = ImageFrontend(cfg.data.height, m.dim, factor=m.subsampling, channels=m.subsampling_channels or m.dim)
    if stats is not None:
        front.set_stats(*stats)
    return front


def build_ocr(cfg: RunConfig, vocab: int, stats: tuple[float, float] | None = None) -> CTCModel:
    """The speech CTC model of ``cfg.model`` with the image front end in place of its subsampling."""
    try:
        return build_ctc(cfg.model, vocab, front_end=image_front_end(cfg, stats))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None


def pixel_stats(run_dir: Path, train: list[ImageLine], data: Any, log: Callable[[str], None]) -> tuple[float, float]:
    """Pixel mean/std of the run (``run_dir/image_stats.json``), estimated the first time over up to
    ``data.stats_images`` training images spread evenly over the manifest."""
    path = run_dir / STATS
    if path.is_file():
        saved = json.loads(path.read_text())
        return float(saved["mean"]), float(saved["std"])
    count = min(len(train), data.stats_images)
    step = len(train) / count
    mean, std = image_stats([load_line_image(train[int(k * step)].image, data.height) for k in range(count)])
    path.write_text(json.dumps({"mean": mean, "std": std, "images": count}))
    log(f"image statistics on {count} training images: mean {mean:.4f}, std {std:.4f}")
    return mean, std


class OCRTask:
    """An OCR run's data (filtered manifests, tokenizer, pixel statistics), loss and dev evaluation."""

    data_keys: tuple[str, ...] = ("tokenizer", "vocab_size", "height")

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        data: ImageDataConfig = cfg.data
        if not 0.0 <= data.width_jitter < 0.5:
            raise ConfigError(f"data.width_jitter: expected a value in [0, 0.5), got {data.width_jitter}")
        folder = Path(data.dir)
        train, self.valid = read_image_manifests(folder, data.train), read_image_manifest(folder / data.valid)
        self.tokenizer = transcript_tokenizer(run_dir / TOKENIZER, [x.text for x in train], data, log)
        self.stats = pixel_stats(run_dir, train, data, log)
        self.train, self.train_targets = self._filter(train)
        self.valid_targets = self.tokenizer.encode([x.text for x in self.valid])

    def _filter(self, lines: list[ImageLine]) -> tuple[list[ImageLine], list[list[int]]]:
        """Drop images that are too wide, have no transcript, or are too narrow for CTC to emit it."""
        targets = self.tokenizer.encode([x.text for x in lines])
        out_lens = self.build_model().encoder.subsampling.output_lengths(torch.tensor([x.width for x in lines]))
        emittable = ctc_emittable(targets, out_lens.tolist())
        keep = [i for i, x in enumerate(lines) if x.width <= self.cfg.data.max_width and emittable[i]]
        if not keep:
            raise DataError(f"{Path(self.cfg.data.dir) / self.cfg.data.train}: no usable training images")
        self.log(f"train: {len(keep)} images, dropped {len(lines) - len(keep)} (too wide, empty or too narrow)")
        return [lines[i] for i in keep], [targets[i] for i in keep]

    def build_model(self) -> CTCModel:
        return build_ocr(self.cfg, len(self.tokenizer), self.stats)

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        m = self.cfg.model
        return CTCLoss(model, autocast, ctc_weight=m.ctc_weight, reverse_weight=m.reverse_weight,  # type: ignore[arg-type]
                       label_smoothing=self.cfg.train.label_smoothing)

    def batches(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        return make_speech_batches([x.width for x in self.train], max_frames=t.max_tokens, seed=t.seed, epoch=epoch)

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[SpeechBatch]:
        d = self.cfg.data
        collator = ImageCollator(self.train, self.train_targets, height=d.height, width_jitter=d.width_jitter,
                                 seed=self.cfg.train.seed, epoch=epoch)
        return iterate_speech(batches, collator, start=start, num_workers=d.num_workers)  # type: ignore[arg-type]

    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev CTC loss per token in bits and greedy WER/CER (batches shared out over ranks)."""
        collator = ImageCollator(self.valid, self.valid_targets, height=self.cfg.data.height)
        batches = make_speech_batches([x.width for x in self.valid], max_frames=self.cfg.train.max_tokens,
                                      seed=0, epoch=0, shuffle=False)
        dev: Iterator[SpeechBatch] = iterate_speech(dist.shard(batches), collator,  # type: ignore[arg-type]
                                                    num_workers=self.cfg.data.num_workers)
        return evaluate_ctc(model, dev, [x.text for x in self.valid], self.tokenizer, dist, autocast)
