"""Python API of the unified model (task ``unified``): one model folder that transcribes speech, translates speech
and translates text (and reads or translates text-line images), as its config declares
(``Unified.load(DIR).translate(["A dog."], tgt_lang="fr")``, ``.translate_audio(["a.wav"], tgt_lang="de")``,
``.transcribe(["a.wav"])``, ``.search(["line.png"], modality="image", task="transcribe")``).

Inputs go through their modality's front end and adapter, the shared encoder, then a beam search of the decoder
forced to start with the tags of the task and language (``decoding/prefix.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from transduce.config import RunConfig, SearchConfig
from transduce.data.audio import load_audio
from transduce.data.batching import pad
from transduce.data.features import Fbank
from transduce.data.images import load_line_image
from transduce.data.speech_batching import pad_features
from transduce.data.tokenizer import EOS, PAD, Tokenizer
from transduce.decoding.hypothesis import Hypothesis, max_lengths
from transduce.decoding.prefix import prefix_beam_search
from transduce.errors import UsageError
from transduce.models.unified import Tags, UnifiedModel
from transduce.speech_config import fbank_config

TOKENIZER = "spm.model"
"""The one SentencePiece model of every language (inputs and outputs)."""
JOBS = {"asr": ("speech", "transcribe"), "st": ("speech", "translate"), "mt": ("text", "translate"),
        "ocr": ("image", "transcribe"), "imt": ("image", "translate")}
"""A training task (data.tasks) -> (its input modality, its task tag)."""

Audio = str | Path | Tensor
"""A file path, or a 1-D float waveform already at the model's sample rate."""


@dataclass(kw_only=True)
class UnifiedDecodeConfig(SearchConfig):
    """Search settings of a unified model (overridable on the command line)."""

    max_len_a: float = 0.5
    """Speech and images: max output length = a * encoder frames + b."""
    batch_size: int = 16
    """Inputs encoded and searched together."""
    text_max_len_a: float = 1.5
    """Text: max output length = a * source pieces + b."""


class Unified:
    """A loaded unified model with its tokenizer, feature front end, tags and default search settings."""

    def __init__(self, model: UnifiedModel, tokenizer: Tokenizer, config: RunConfig, card: dict | None = None,
                 device: str = "cpu") -> None:
        self.model, self.config, self.card, self.device = model.to(device).eval(), config, card or {}, device
        self.tokenizer = tokenizer
        self.inputs: tuple[str, ...] = tuple(config.model.inputs)
        self.jobs: tuple[str, ...] = tuple(config.data.tasks)
        self.tags = Tags(len(tokenizer), model_languages(config))
        self.offers: dict[tuple[str, str], list[str]] = {}
        """(input modality, task tag) -> the languages it produces, for each training task of the model."""
        for job in self.jobs:
            modality, tag = JOBS[job]
            langs = [config.data.src_lang] if tag == "transcribe" else list(config.data.langs)
            self.offers[(modality, tag)] = list(dict.fromkeys([*self.offers.get((modality, tag), []), *langs]))
        self.fbank = Fbank(fbank_config(config.data))
        self.sample_rate = config.data.sample_rate

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Unified:
        """A unified model folder (or run folder); any other kind of model is a UsageError naming it."""
        from transduce.tasks import build_loaded  # the task registry sits above this module

        model, cfg, folder = build_loaded(path, Unified, "this needs a unified model")
        return cls(model, Tokenizer(folder.file(TOKENIZER)), cfg, folder.card, device)  # type: ignore[arg-type]

    def prefix(self, task: str, lang: str | None, modality: str) -> list[int]:
        """The tags for ``task`` into ``lang`` (None: the task's first language) from ``modality``; what the model
        was not trained for is a one-line UsageError naming what it has."""
        if modality not in self.inputs:
            raise UsageError(f"{modality} input: this model takes {', '.join(self.inputs)}")
        langs = self.offers.get((modality, task))
        if langs is None:
            done = sorted(tag for m, tag in self.offers if m == modality)
            raise UsageError(f"--task {task}: from {modality} this model does {', '.join(done) or 'nothing'}")
        lang = lang or langs[0]
        if lang not in langs:
            raise UsageError(f"--tgt-lang {lang}: this model's {task} task produces {', '.join(langs)}")
        return self.tags.prefix(task, lang)

    def features(self, audio: Audio) -> Tensor:
        """(T, F) log-mel filterbank of a file or waveform."""
        wave = audio if isinstance(audio, Tensor) else load_audio(audio, self.sample_rate)
        with torch.no_grad():
            return self.fbank(wave.float())

    @torch.no_grad()
    def search(self, inputs: Sequence[Audio] | Sequence[str], *, modality: str, task: str = "translate",
               tgt_lang: str | None = None, **overrides: object) -> list[list[Hypothesis]]:
        """N-best hypotheses (piece ids) per input (audio for speech, sentences for text), in input order;
        ``overrides`` are UnifiedDecodeConfig fields."""
        cfg: UnifiedDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        prefix = self.prefix(task, tgt_lang, modality)
        items = self._items(inputs, modality)
        order = sorted(range(len(items)), key=lambda i: len(items[i]))  # similar lengths together
        results: list[list[Hypothesis]] = [[] for _ in items]
        for start in range(0, len(order), max(cfg.batch_size, 1)):
            chunk = order[start: start + max(cfg.batch_size, 1)]
            found = self._search_batch([items[i] for i in chunk], modality, prefix, cfg)
            for i, nbest in zip(chunk, found, strict=True):
                results[i] = nbest
        return results

    def _items(self, inputs: Sequence[Audio] | Sequence[str], modality: str) -> list:
        """Speech: (T, F) features; image: (W, P) pixel columns of files (a bad one an ImageError naming it) or
        tensors; text: piece ids + EOS."""
        if modality == "speech":
            return [self.features(a) for a in inputs]
        if modality == "image":
            height = self.config.model.image_height
            return [x if isinstance(x, Tensor) else load_line_image(x, height) for x in inputs]
        return [[*ids, EOS] for ids in self.tokenizer.encode(list(inputs))]  # type: ignore[arg-type]

    def _search_batch(self, items: list, modality: str, prefix: list[int], cfg: UnifiedDecodeConfig
                      ) -> list[list[Hypothesis]]:
        if modality != "text":
            x, lens = pad_features(items)
        else:
            x, lens = pad(items, PAD), torch.tensor([len(i) for i in items])
        memory, memory_lens = self.model.encode(x.to(self.device), lens.to(self.device), modality=modality)
        a = cfg.text_max_len_a if modality == "text" else cfg.max_len_a
        prefixes = torch.tensor([prefix] * len(items), device=self.device)  # (B, 2)
        return prefix_beam_search(self.model, memory, memory_lens, prefixes, self.tags.ids().to(self.device),
                                  max_lengths(memory_lens, a, cfg.max_len_b), beam=max(cfg.beam, cfg.nbest),
                                  nbest=cfg.nbest, len_penalty=cfg.len_penalty,
                                  len_penalty_style=cfg.len_penalty_style)

    def _best(self, rows: list[list[Hypothesis]]) -> list[str]:
        return self.tokenizer.decode([row[0].tokens if row else [] for row in rows])

    def translate(self, lines: Sequence[str], tgt_lang: str | None = None, **overrides: object) -> list[str]:
        """Text -> the best translation of each line into ``tgt_lang``."""
        return self._best(self.search(lines, modality="text", tgt_lang=tgt_lang, **overrides))  # type: ignore[arg-type]

    def translate_audio(self, audio: Sequence[Audio], tgt_lang: str | None = None, **overrides: object) -> list[str]:
        """Speech -> the best translation of each input into ``tgt_lang``."""
        return self._best(self.search(audio, modality="speech", tgt_lang=tgt_lang, **overrides))  # type: ignore[arg-type]

    def transcribe(self, audio: Sequence[Audio], **overrides: object) -> list[str]:
        """Speech -> the best transcript of each input."""
        return self._best(self.search(audio, modality="speech", task="transcribe", **overrides))  # type: ignore[arg-type]


def model_languages(cfg: RunConfig) -> tuple[str, ...]:
    """The languages with a tag: the source language (transcripts), then the translation targets."""
    return tuple(dict.fromkeys([cfg.data.src_lang, *cfg.data.langs]))
