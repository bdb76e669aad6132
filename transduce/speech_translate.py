"""Python API for end-to-end speech translation: ``SpeechTranslator.load(DIR).translate(["a.wav"], tgt_lang="fr")``.

Audio -> log-mel features -> the model's speech encoder -> beam search of its target decoder (``beam_loop``,
length penalty), started with the language tag of ``tgt_lang`` (default: the model's first language). The
output API matches ``Translator`` and ``Cascade`` (``search``, ``translate``, ``translate_nbest``), so the
command line and the server treat all three alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from transduce.config import RunConfig, SearchConfig
from transduce.data.audio import load_audio
from transduce.data.features import Fbank
from transduce.data.speech_batching import pad_features
from transduce.data.tokenizer import Tokenizer
from transduce.decoding.hypothesis import Hypothesis, max_lengths
from transduce.decoding.tagged import tagged_beam_search
from transduce.errors import UsageError
from transduce.models.st import SpeechTranslationModel, tag_ids
from transduce.speech_config import fbank_config

TRANSCRIPT_TOKENIZER = "spm.model"
"""The English transcript pieces of the CTC head (the file name a speech model folder uses)."""
TARGET_TOKENIZER = "tgt_spm.model"
"""The target-language pieces of the decoder."""

Audio = str | Path | Tensor
"""A file path, or a 1-D float waveform already at the model's sample rate."""


@dataclass(kw_only=True)
class STDecodeConfig(SearchConfig):
    """Search settings of a speech translation model (overridable on the command line)."""

    max_len_a: float = 0.5
    """Max output length = a * encoder frames + b (40 ms frames with subsampling 4)."""
    batch_size: int = 16
    """Utterances encoded and searched together."""
    chunk_size: int = 0
    """Encoder frames per attention chunk (0 = full context)."""
    left_chunks: int = -1
    """Chunks of left context each chunk sees (-1 = all)."""


class SpeechTranslator:
    """A loaded speech translation model with its tokenizers, feature front end and default search settings."""

    def __init__(self, model: SpeechTranslationModel, transcripts: Tokenizer, targets: Tokenizer, config: RunConfig,
                 card: dict | None = None, device: str = "cpu") -> None:
        self.model, self.config, self.card, self.device = model.to(device).eval(), config, card or {}, device
        self.transcripts, self.targets = transcripts, targets
        self.langs: tuple[str, ...] = tuple(config.data.tgt_langs)
        self.tags = tag_ids(len(targets), len(self.langs))
        self.fbank = Fbank(fbank_config(config.data))
        self.sample_rate = config.data.sample_rate

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> SpeechTranslator:
        """A speech translation model folder (or run folder); any other kind of model is a UsageError naming it."""
        from transduce.tasks import build_loaded, get_task  # the task registry sits above this module

        model, cfg, folder = build_loaded(path, SpeechTranslator, "this needs a speech translation model")
        inference = get_task(cfg.task).inference  # e.g. an image translation model's ImageTranslator
        return (inference if issubclass(inference, cls) else cls)(
            model, Tokenizer(folder.file(TRANSCRIPT_TOKENIZER)), Tokenizer(folder.file(TARGET_TOKENIZER)), cfg,  # type: ignore[arg-type]
            folder.card, device)

    def chunk_frames(self, chunk_ms: float) -> int:
        """Milliseconds of audio -> encoder frames per attention chunk (at least 1)."""
        seconds_per_frame = self.fbank.cfg.frame_shift / self.sample_rate * self.config.model.subsampling
        return max(1, round(chunk_ms / 1000 / seconds_per_frame))

    def tag(self, lang: str | None) -> int:
        """The decoder's first token for ``lang`` (None: the model's first language); an unknown language is a
        UsageError naming the model's languages."""
        if lang is None or lang == "":
            return int(self.tags[0])
        if lang not in self.langs:
            raise UsageError(f"--tgt-lang {lang}: this model translates into {', '.join(self.langs)}")
        return int(self.tags[self.langs.index(lang)])

    def features(self, audio: Audio) -> Tensor:
        """(T, F) log-mel filterbank of a file or waveform."""
        wave = audio if isinstance(audio, Tensor) else load_audio(audio, self.sample_rate)
        with torch.no_grad():
            return self.fbank(wave.float())

    @torch.no_grad()
    def search(self, audio: Sequence[Audio], tgt_lang: str | None = None, **overrides: object
               ) -> list[list[Hypothesis]]:
        """N-best hypotheses (target piece ids) per input, in input order; ``overrides`` are STDecodeConfig fields."""
        cfg: STDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        tag = self.tag(tgt_lang)
        feats = [self.features(a) for a in audio]
        order = sorted(range(len(feats)), key=lambda i: feats[i].size(0))  # similar lengths together
        results: list[list[Hypothesis]] = [[] for _ in feats]
        for start in range(0, len(order), max(cfg.batch_size, 1)):
            chunk = order[start: start + cfg.batch_size]
            x, lens = pad_features([feats[i] for i in chunk])
            memory, memory_lens = self.model.encode(x.to(self.device), lens.to(self.device),
                                                    chunk_size=cfg.chunk_size, left_chunks=cfg.left_chunks)
            tags = torch.full((len(chunk),), tag, device=self.device)
            limits = max_lengths(memory_lens, cfg.max_len_a, cfg.max_len_b)
            found = tagged_beam_search(self.model, memory, memory_lens, tags, self.tags.to(self.device), limits,
                                       beam=max(cfg.beam, cfg.nbest), nbest=cfg.nbest, len_penalty=cfg.len_penalty,
                                       len_penalty_style=cfg.len_penalty_style)
            for i, nbest in zip(chunk, found, strict=True):
                results[i] = nbest
        return results

    @torch.no_grad()
    def translate_stream(self, frames: Iterable[Tensor], tgt_lang: str | None = None, *, chunk_size: int,
                         left_chunks: int = -1, **overrides: object) -> list[Hypothesis]:
        """One live utterance: its feature frames arrive in pieces (N_i, F) (e.g. ``features`` of the audio so far,
        minus what was sent); the encoder runs chunk by chunk as they come (its caches kept), the decoder searches
        once the input ends. Equal to ``search`` with the same chunk_size and left_chunks. Returns the n-best."""
        cfg: STDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        tag = self.tag(tgt_lang)
        state = self.model.init_stream(1, self.device)
        parts = []
        for piece in frames:
            out, state = self.model.forward_chunk(piece[None].to(self.device), state, chunk_size=chunk_size,
                                                  left_chunks=left_chunks)
            parts.append(out)
        out, state = self.model.forward_chunk(torch.zeros(1, 0, self.fbank.cfg.num_mel_bins, device=self.device),
                                              state, chunk_size=chunk_size, left_chunks=left_chunks, final=True)
        memory = torch.cat([*parts, out], dim=1)  # (1, T', E)
        lens = torch.tensor([memory.size(1)], device=self.device)
        [found] = tagged_beam_search(self.model, memory, lens, torch.tensor([tag], device=self.device),
                                     self.tags.to(self.device), max_lengths(lens, cfg.max_len_a, cfg.max_len_b),
                                     beam=max(cfg.beam, cfg.nbest), nbest=cfg.nbest, len_penalty=cfg.len_penalty,
                                     len_penalty_style=cfg.len_penalty_style)
        return found

    def translate(self, audio: Sequence[Audio], tgt_lang: str | None = None, **overrides: object) -> list[str]:
        """Detokenized best translation per input, in input order."""
        rows = self.search(audio, tgt_lang, **overrides)
        return self.targets.decode([row[0].tokens if row else [] for row in rows])

    def translate_nbest(self, audio: Sequence[Audio], nbest: int, tgt_lang: str | None = None, **overrides: object
                        ) -> list[list[tuple[str, float]]]:
        """The ``nbest`` best (translation, score) pairs per input."""
        beam = max(nbest, int(overrides.pop("beam", self.config.decode.beam)))  # type: ignore[call-overload]
        rows = self.search(audio, tgt_lang, nbest=nbest, beam=beam, **overrides)
        return [list(zip(self.targets.decode([h.tokens for h in row]), [h.score for h in row], strict=True))
                for row in rows]
