"""Recordings of any length, offline: read block by block, cut at pauses by silero-vad and the endpoint rules,
recognize the pieces in batches, and give each piece's text with its start and end in the recording.

Memory is bounded by the longest piece (``EndpointConfig.max_segment``) times the batch, whatever the length
of the file: no more than a block of the file, the audio of the piece in progress and one batch of pieces is
held at once. A piece longer than ``decode.window_after`` seconds (none with the default rules) is encoded with
local attention (``nn/local_attention.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from transduce.data.audio import audio_blocks
from transduce.recognize import Recognizer, Transcript
from transduce.streaming.endpoint import EndpointConfig, SpeechSegment, iter_speech

LONG_AUDIO_SECONDS = 60.0
"""``transduce transcribe`` cuts files longer than this at pauses (``--segment auto``)."""


def default_cuts() -> EndpointConfig:
    """Endpoint rules over silero-vad probabilities for cutting recordings: a pause of 0.5 s ends a piece, a
    piece holds at most 20 s, speech shorter than 0.1 s is noise, 0.2 s of context is kept on each side."""
    return EndpointConfig(trailing_silence=0.5, max_segment=20.0, min_speech=0.1, padding=0.2)


@dataclass
class TimedTranscript:
    """One piece of a recording: seconds from the recording's start, and its best transcript (token times
    counted from the recording's start too)."""

    start: float
    end: float
    transcript: Transcript

    @property
    def text(self) -> str:
        return self.transcript.text


def speech_pieces(recognizer: Recognizer, audio: str | Path | Iterable[Tensor], cuts: EndpointConfig | None = None,
                  *, block_seconds: float = 10.0) -> Iterator[tuple[SpeechSegment, Tensor]]:
    """The pieces of speech of a file (read in ``block_seconds`` blocks) or of an iterable of (n,) chunks at
    the recognizer's sample rate, each with its samples, in order, as soon as each is found."""
    blocks = audio_blocks(audio, recognizer.sample_rate, block_seconds) if isinstance(audio, (str, Path)) else audio
    return iter_speech(blocks, recognizer.voice_detector(), cuts or default_cuts())


def transcribe_long(recognizer: Recognizer, audio: str | Path | Iterable[Tensor], cuts: EndpointConfig | None = None,
                    *, block_seconds: float = 10.0, overrides: Mapping[str, object] | None = None,
                    ) -> Iterator[TimedTranscript]:
    """Transcripts of a recording's pieces of speech in order, yielded batch by batch (``decode.batch_size``
    pieces recognized together); ``overrides`` are CTCDecodeConfig fields."""
    overrides = dict(overrides or {})
    batch_size = int(overrides.get("batch_size", recognizer.config.decode.batch_size))  # type: ignore[call-overload]
    batch: list[tuple[SpeechSegment, Tensor]] = []
    for piece in speech_pieces(recognizer, audio, cuts, block_seconds=block_seconds):
        batch.append(piece)
        if len(batch) == batch_size:
            yield from _recognize(recognizer, batch, overrides)
            batch = []
    if batch:
        yield from _recognize(recognizer, batch, overrides)


def _recognize(recognizer: Recognizer, batch: list[tuple[SpeechSegment, Tensor]],
               overrides: dict[str, object]) -> Iterator[TimedTranscript]:
    found = recognizer.search([wave for _, wave in batch], **overrides)
    for (segment, _), nbest in zip(batch, found, strict=True):
        best = nbest[0] if nbest else Transcript(text="", score=0.0, tokens=[], times=[])
        times = [round(segment.start + t, 3) for t in best.times]
        yield TimedTranscript(segment.start, segment.end, replace(best, times=times))


def encode_with_memory(recognizer: Recognizer, audio: str | Path | Iterable[Tensor], *, segment: int,
                       memory: int = 1, block_seconds: float = 10.0) -> Iterator[Tensor]:
    """Transformer-XL segment recurrence over a whole recording, offline: encoder frames are computed ``segment``
    at a time, each attending (with its relative positions) to the cached keys/values of the ``memory``
    segments before it in every layer, and nothing older. It is the streaming encoder's machinery
    (``ConformerEncoder.forward_chunk``: per-layer ``ConformerLayerState`` caches trimmed to ``memory``
    segments) fed the file block by block, so memory stays bounded however long the recording; the output
    equals ``encode(..., chunk_size=segment, left_chunks=memory)`` and the blockwise ``LocalWindow(segment,
    memory)``. Needs a causal Conformer (a centred convolution would need the next segment). Yields the
    encoder output (1, T_i, D) of each block, on the recognizer's device."""
    from transduce.data.features import StreamingFbank

    blocks = audio_blocks(audio, recognizer.sample_rate, block_seconds) if isinstance(audio, (str, Path)) else audio
    model, features = recognizer.model, StreamingFbank(recognizer.fbank)
    state = model.init_stream(1, recognizer.device)
    with torch.no_grad():
        for block in blocks:
            frames = features.accept(block.float())  # (N, F)
            out, state = model.forward_chunk(frames[None].to(recognizer.device), state, chunk_size=segment,
                                             left_chunks=memory)
            yield out
        out, _ = model.forward_chunk(torch.zeros(1, 0, recognizer.fbank.cfg.num_mel_bins, device=recognizer.device),
                                     state, chunk_size=segment, left_chunks=memory, final=True)
        yield out
