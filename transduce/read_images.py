"""Python API for reading photos of text: ``ImageRecognizer.load(DIR).transcribe(["a.png", ...])``, and for
translating them end to end: ``ImageTranslator.load(DIR).translate(["a.png", ...], "de")``.

An OCR model (task ``ocr``) is the speech task's CTC or hybrid CTC/attention model with the image front end in
place of filterbanks and subsampling, so it decodes with every mode of ``Recognizer`` (ctc greedy or prefix beam,
attention, joint, rescore, n-best, an n-gram LM). Inputs are image files (png, jpg, anything Pillow reads) or
(W, H) pixel-column tensors; a bad file is an ``ImageError`` naming it. Token "times" are pixel columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from transduce.config import RunConfig
from transduce.data.images import load_line_image
from transduce.data.tokenizer import Tokenizer
from transduce.decoding.hypothesis import Hypothesis
from transduce.errors import ConfigError
from transduce.models.ctc import CTCModel
from transduce.models.st import SpeechTranslationModel, tag_ids
from transduce.nn.local_attention import LocalWindow
from transduce.recognize import Recognizer
from transduce.speech_config import CTCDecodeConfig, SpeechDataConfig
from transduce.speech_translate import SpeechTranslator

if TYPE_CHECKING:
    from transduce.streaming.endpoint import EndpointConfig
    from transduce.streaming.session import StreamSession


class ImageRecognizer(Recognizer):
    """A ``Recognizer`` whose inputs are text-line images, read at the model's height as pixel columns."""

    reads_images = True

    def __init__(self, model: CTCModel, tokenizer: Tokenizer, config: RunConfig, card: dict | None = None,
                 device: str = "cpu") -> None:
        # the speech recognizer's filterbank is built from a default speech data section and never used here
        super().__init__(model, tokenizer, replace(config, data=SpeechDataConfig()), card, device)
        self.config = config
        self.height: int = config.data.height
        self.seconds_per_output = float(model.encoder.subsampling.factor)  # pixel columns per output frame

    def features(self, audio: str | Path | Tensor) -> Tensor:
        """(W, H) pixel columns of an image file (or a (W, H) tensor as it is)."""
        return audio if isinstance(audio, Tensor) else load_line_image(audio, self.height)

    def local_window(self, frames: int, cfg: CTCDecodeConfig) -> LocalWindow | None:
        """Full attention: a text line is short."""
        return None

    def stream(self, chunk_ms: float | None = None, *, endpoint: EndpointConfig | None = None,
               vad: bool = False, **overrides: object) -> StreamSession:
        raise ConfigError("an OCR model reads whole images; it does not stream")


class ImageTranslator(SpeechTranslator):
    """A ``SpeechTranslator`` whose inputs are text-line images (task ``image_translation``): the speech translation
    model with the image front end in place of filterbanks and subsampling."""

    reads_images = True

    def __init__(self, model: SpeechTranslationModel, transcripts: Tokenizer, targets: Tokenizer, config: RunConfig,
                 card: dict | None = None, device: str = "cpu") -> None:
        # the speech translator's own __init__ builds a filterbank from speech data fields this config lacks
        self.model, self.config, self.card, self.device = model.to(device).eval(), config, card or {}, device
        self.transcripts, self.targets = transcripts, targets
        self.langs: tuple[str, ...] = tuple(config.data.tgt_langs)
        self.tags = tag_ids(len(targets), len(self.langs))
        self.height: int = config.data.height

    def features(self, audio: str | Path | Tensor) -> Tensor:
        """(W, H) pixel columns of an image file (or a (W, H) tensor as it is)."""
        return audio if isinstance(audio, Tensor) else load_line_image(audio, self.height)

    def chunk_frames(self, chunk_ms: float) -> int:
        raise ConfigError("an image translation model reads whole images; it has no audio chunks")

    def translate_stream(self, frames: Iterable[Tensor], tgt_lang: str | None = None, *, chunk_size: int,
                         left_chunks: int = -1, **overrides: object) -> list[Hypothesis]:
        raise ConfigError("an image translation model reads whole images; it does not stream")
