"""End-to-end image translation (task ``image_translation``): a text-line image in, its German/French/Czech
translation out. The speech translation model (``models/st.py``: encoder + CTC head on the English transcript +
tagged target decoder) with the image front end (``nn/image_frontend.py``) in place of filterbanks and
subsampling; image manifests with translations (``transduce data text-images``), its loss (``STLoss``), dev
loss/BLEU (``evaluate_st``) and component-wise start (``init_st_components``: the encoder and CTC head of an OCR
model, the decoder of a translation model) are the speech translation task's; ``ImageTranslator`` for inference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from transduce.config import SECTIONS, RunConfig
from transduce.data.images import ImageCollator, ImageLine, read_image_manifest, read_image_manifests
from transduce.data.speech_batching import iterate_speech, make_speech_batches
from transduce.data.st_batching import STBatch, STCollator
from transduce.data.tokenizer import Tokenizer
from transduce.errors import ConfigError, DataError
from transduce.models.folder import ModelFolder
from transduce.models.st import SpeechTranslationModel, STModelConfig, build_st, tag_ids, tied_aliases
from transduce.read_images import ImageTranslator
from transduce.speech_translate import TARGET_TOKENIZER, TRANSCRIPT_TOKENIZER, STDecodeConfig
from transduce.tasks.ocr import ImageDataConfig, image_front_end, pixel_stats
from transduce.tasks.speech_translation import STLoss, evaluate_st
from transduce.tasks.st_components import init_st_components, st_tokenizer
from transduce.train.distributed import DistContext


@dataclass(kw_only=True)
class ImageSTDataConfig(ImageDataConfig):
    """Image manifests with translations: the OCR task's image fields (``tokenizer``/``vocab_size``: the English
    transcript pieces of the CTC head) plus the targets."""

    tgt_langs: tuple[str, ...] = ("de",)
    """Target languages, each a key of the manifests' "translation"; the first is the default at inference."""
    tgt_tokenizer: str = "bpe"
    """SentencePiece model type of the target pieces (one model over all target languages)."""
    tgt_vocab_size: int = 8000
    """Target SentencePiece vocabulary size."""
    tgt_spm: str = ""
    """An existing SentencePiece model as the target tokenizer (else model.init_decoder_from's, else trained)."""


@dataclass(frozen=True)
class ImageExample:
    """One (image, target language) pair."""

    line: ImageLine
    transcript: list[int]
    tag: int
    target: list[int]
    lang: str


@dataclass(frozen=True)
class ImageSTKind:
    """The ``image_translation`` task kind, read by ``ImageTranslator``."""

    name: str = "image_translation"
    description: str = "an image translation model"
    inference: type = field(default=ImageTranslator)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "data": ImageSTDataConfig, "model": STModelConfig, "decode": STDecodeConfig}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return [folder / TRANSCRIPT_TOKENIZER, folder / TARGET_TOKENIZER]

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return tied_aliases(cfg.model)

    def build_model(self, cfg: RunConfig, folder: Path) -> SpeechTranslationModel:
        """An untrained model for the tokenizers in ``folder`` (its pixel statistics come with the weights)."""
        transcripts, targets = Tokenizer(folder / TRANSCRIPT_TOKENIZER), Tokenizer(folder / TARGET_TOKENIZER)
        return build_image_st(cfg, len(transcripts), len(targets))

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> ImageSTTask:
        return ImageSTTask(cfg, run_dir, log)

    def load(self, folder: ModelFolder, device: str = "cpu") -> ImageTranslator:
        translator = ImageTranslator.load(folder.path, device=device)
        assert isinstance(translator, ImageTranslator)
        return translator

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """``transduce info`` lines."""
        m, d = cfg.model, cfg.data
        model = self.build_model(cfg, folder.path)
        folder.load_into(model, self.tied_aliases(cfg))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        return [f"image translation: image front end ({d.height}-pixel lines, width / {m.subsampling}) + {m.encoder} "
                f"encoder {m.layers} layers d={m.dim}, {m.decoder_layers}-layer decoder, {params:.2f}M parameters",
                f"en -> {', '.join(d.tgt_langs)} (default {d.tgt_langs[0]}); CTC on the transcript, ctc_weight "
                f"{m.ctc_weight}; decodes by default with beam {cfg.decode.beam}"]


IMAGE_TRANSLATION = ImageSTKind()


def build_image_st(cfg: RunConfig, transcript_vocab: int, target_vocab: int,
                   stats: tuple[float, float] | None = None) -> SpeechTranslationModel:
    """The speech translation model of ``cfg.model`` with the image front end in place of its subsampling."""
    try:
        return build_st(cfg.model, transcript_vocab, target_vocab, len(cfg.data.tgt_langs),
                        front_end=image_front_end(cfg, stats))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None


class ImageSTTask:
    """An image translation run's data (examples, tokenizers, pixel statistics), loss and dev evaluation."""

    data_keys: tuple[str, ...] = ("tokenizer", "vocab_size", "height", "tgt_langs", "tgt_tokenizer", "tgt_vocab_size")

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        data: ImageSTDataConfig = cfg.data
        self.langs = tuple(data.tgt_langs)
        if not self.langs or len(set(self.langs)) != len(self.langs):
            raise ConfigError(f"data.tgt_langs: name each target language once, got {list(self.langs)}")
        folder = Path(data.dir)
        train = _with_langs(read_image_manifests(folder, data.train), self.langs, folder / data.train)
        valid = _with_langs(read_image_manifest(folder / data.valid), self.langs, folder / data.valid)
        m = cfg.model
        self.transcripts = st_tokenizer(run_dir / TRANSCRIPT_TOKENIZER, m, "model.init_encoder_from", data.tokenizer,
                                        data.vocab_size, [x.text for x in train], "", log)
        self.targets = st_tokenizer(run_dir / TARGET_TOKENIZER, m, "model.init_decoder_from", data.tgt_tokenizer,
                                    data.tgt_vocab_size, [x.translation[g] for x in train for g in self.langs],
                                    data.tgt_spm, log)
        self.tags = tag_ids(len(self.targets), len(self.langs)).tolist()
        self.stats = pixel_stats(run_dir, train, data, log)
        self.train, self.valid = self._examples(train, data.max_width), self._examples(valid, math.inf)
        log(f"train: {len(self.train)} examples ({len(train)} images, {len(self.langs)} target languages)")

    def _examples(self, lines: list[ImageLine], max_width: float) -> list[ImageExample]:
        """One example per (image, language), grouped by language; images wider than ``max_width`` and targets
        too long for the decoder's positions are left out."""
        transcripts = self.transcripts.encode([x.text for x in lines])
        limit = self.cfg.model.max_positions - 1
        out = []
        for tag, lang in zip(self.tags, self.langs, strict=True):
            for x, transcript, target in zip(lines, transcripts, self.targets.encode([x.translation[lang]
                                                                                     for x in lines]), strict=True):
                if x.width <= max_width and 0 < len(target) <= limit:
                    out.append(ImageExample(x, transcript, tag, target, lang))
        if not out:
            raise DataError(f"{Path(self.cfg.data.dir) / self.cfg.data.train}: no usable examples")
        return out

    def build_model(self) -> SpeechTranslationModel:
        return build_image_st(self.cfg, len(self.transcripts), len(self.targets), self.stats)

    def init_components(self, model: nn.Module) -> None:
        init_st_components(model, self.cfg, self.log)

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        return STLoss(model, autocast, ctc_weight=self.cfg.model.ctc_weight,  # type: ignore[arg-type]
                      label_smoothing=self.cfg.train.label_smoothing)

    def batches(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        return make_speech_batches([e.line.width for e in self.train], max_frames=t.max_tokens, seed=t.seed,
                                   epoch=epoch)

    def collator(self, train: bool, epoch: int = 0) -> STCollator:
        """Training batches (width jitter) or dev batches (as they are) of examples."""
        examples, d = (self.train if train else self.valid), self.cfg.data
        images = ImageCollator([e.line for e in examples], [e.transcript for e in examples], height=d.height,
                               width_jitter=d.width_jitter if train else 0.0, seed=self.cfg.train.seed, epoch=epoch)
        return STCollator(images, [(e.tag, e.target) for e in examples])  # type: ignore[arg-type]

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[STBatch]:
        return iterate_speech(batches, self.collator(True, epoch), start=start, num_workers=self.cfg.data.num_workers)

    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev translation loss per target token in bits and, with train.eval_bleu, greedy BLEU per language."""
        batches = make_speech_batches([e.line.width for e in self.valid], max_frames=self.cfg.train.max_tokens,
                                      seed=0, epoch=0, shuffle=False)
        dev = iterate_speech(dist.shard(batches), self.collator(False), num_workers=self.cfg.data.num_workers)
        return evaluate_st(model, dev, [(e.lang, e.line.translation[e.lang]) for e in self.valid], self.targets,
                           self.tags, self.cfg, dist, autocast)


def _with_langs(lines: list[ImageLine], langs: tuple[str, ...], where: Path) -> list[ImageLine]:
    """``lines`` unchanged; a DataError naming the manifest and the first line without one of ``langs``."""
    for x in lines:
        missing = [g for g in langs if g not in x.translation]
        if missing:
            raise DataError(f"{where}: {x.id} has no {missing[0]!r} translation (data.tgt_langs: {', '.join(langs)})")
    return lines
