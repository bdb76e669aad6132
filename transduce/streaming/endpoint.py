"""Endpoint rules for streaming recognition (WeNet/k2 style) over per-frame speech decisions.

A frame "speaks" when a voice activity detector's probability reaches ``speech_threshold`` or when the
recognizer emits a token there (the CTC argmax is not blank); the rules only see one decision per frame
and the frame duration, so both sources fit one API. A segment runs from the previous endpoint (or the
stream's start) to the next; rules, in seconds:
  1. no speech yet and silence >= ``silence_before_speech`` -> endpoint, the segment is dropped;
  2. speech, then trailing silence >= ``trailing_silence`` -> endpoint;
  3. the segment is ``max_segment`` long -> endpoint (cut even inside speech).
Speech frames closer than ``trailing_silence`` form one stretch of speech, which counts only once it
holds ``min_speech`` seconds of speech frames (so a click or a cough is silence); an endpoint reports the
stretch it closes, widened by ``padding`` on both sides within the segment.

The state is explicit: ``advance(config, state, decisions, frame_seconds) -> (state, endpoints)``;
``Endpointer`` holds one stream's state for callers that prefer an object. Times count frames from the
stream's start, so they are exact multiples of the frame duration and independent of how the decisions
are chunked. ``segment_audio`` runs silero VAD and the rules over a recording chunk by chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from transduce.streaming.vad import SileroVAD

Rule = Literal["silence_before_speech", "trailing_silence", "max_segment", "end_of_stream"]
_EPS = 1e-9  # frame counts times a frame duration land a hair off round seconds


@dataclass(kw_only=True)
class EndpointConfig:
    """Endpoint rules and speech decisions, durations in seconds."""

    trailing_silence: float = 0.8
    """Rule 2: silence after speech that ends a segment."""
    silence_before_speech: float = 5.0
    """Rule 1: silence with no speech yet that ends (drops) a segment."""
    max_segment: float = 20.0
    """Rule 3: the longest segment, counted from the previous endpoint."""
    speech_threshold: float = 0.5
    """A frame given as a probability is speech when the probability is at least this."""
    min_speech: float = 0.0
    """Speech frames (seconds) before a stretch counts: 0 for CTC decisions (a token is one frame), ~0.25 for VAD."""
    padding: float = 0.0
    """Seconds of context kept on each side of the reported speech, never beyond its segment."""

    def __post_init__(self) -> None:
        for name in ("trailing_silence", "silence_before_speech", "max_segment"):
            if getattr(self, name) <= 0:
                raise ValueError(f"endpoint.{name} must be positive, got {getattr(self, name)}")
        for name in ("min_speech", "padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"endpoint.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.speech_threshold <= 1.0:
            raise ValueError(f"endpoint.speech_threshold must be in [0, 1], got {self.speech_threshold}")


@dataclass(frozen=True)
class SpeechSegment:
    """Speech found in the stream, in seconds from the stream's start."""

    start: float
    end: float


@dataclass(frozen=True)
class Endpoint:
    """A rule fired at ``time`` (seconds from the stream's start); ``segment`` is the speech it closes,
    None when the segment held none (rule 1, or rule 3 over noise)."""

    time: float
    rule: Rule
    segment: SpeechSegment | None


@dataclass
class EndpointState:
    """One stream's position, counted in frames from its start."""

    frames: int = 0
    """Frames seen so far."""
    frame_seconds: float | None = None
    """Frame duration, fixed by the first decisions."""
    segment_start: int = 0
    """Frame where the current segment began (the previous endpoint)."""
    speech_start: int | None = None
    """First speech frame of the segment's stretch of speech; None while it has none."""
    speech_end: int | None = None
    """One past the stretch's last speech frame."""
    speech_frames: int = 0
    """Speech frames in the stretch; it counts as speech once they last ``min_speech``."""


def speech_decisions(decisions: Tensor | Sequence[bool] | Sequence[float], threshold: float) -> list[bool]:
    """(T,) booleans (speech or not) or float probabilities (speech when >= ``threshold``) -> T booleans."""
    values = torch.as_tensor(decisions)
    if values.dim() != 1:
        raise ValueError(f"expected one decision per frame, shape (T,), got {tuple(values.shape)}")
    if values.dtype == torch.bool:
        return values.tolist()
    if values.is_floating_point():
        return (values >= threshold).tolist()
    raise ValueError(f"expected bool decisions or float probabilities per frame, got dtype {values.dtype}")


def reset(state: EndpointState) -> EndpointState:
    """Start a new segment at the current frame (a run of speech in progress continues into it)."""
    return replace(state, segment_start=state.frames, speech_start=None, speech_end=None, speech_frames=0)


def advance(
    config: EndpointConfig,
    state: EndpointState,
    decisions: Tensor | Sequence[bool] | Sequence[float],
    frame_seconds: float,
    *,
    decoded: bool | None = None,
) -> tuple[EndpointState, list[Endpoint]]:
    """Feed the next frames' decisions (T,) -> (new state, endpoints they triggered, in order).

    ``decoded=None``: the rules are checked after every frame and "something decoded" means the segment
    has speech, so endpoints fall on exact frames whatever the chunking (VAD, or CTC argmax decisions).
    ``decoded=True/False``: a recognizer's own answer for its hypothesis so far, valid at the end of this
    chunk only, so the rules are checked once there. After an endpoint the next segment starts at once.
    """
    if frame_seconds <= 0:
        raise ValueError(f"frame_seconds must be positive, got {frame_seconds}")
    if state.frame_seconds is not None and not math.isclose(state.frame_seconds, frame_seconds):
        raise ValueError(f"frame_seconds changed from {state.frame_seconds} to {frame_seconds} within a stream")
    speech = speech_decisions(decisions, config.speech_threshold)
    state = replace(state, frame_seconds=frame_seconds)
    endpoints: list[Endpoint] = []
    for frame in speech:
        state = _step(config, state, frame)
        if decoded is None and (fired := _check(config, state, _is_speech(config, state))) is not None:
            endpoints.append(fired)
            state = reset(state)
    if decoded is not None and speech and (fired := _check(config, state, decoded)) is not None:
        endpoints.append(fired)
        state = reset(state)
    return state, endpoints


def finish(config: EndpointConfig, state: EndpointState) -> tuple[EndpointState, list[Endpoint]]:
    """End of stream: close the segment in progress -> its speech as an ``end_of_stream`` endpoint, if any."""
    if not _is_speech(config, state):
        return reset(state), []
    return reset(state), [_endpoint(config, state, "end_of_stream", True)]


def _step(config: EndpointConfig, state: EndpointState, speech: bool) -> EndpointState:
    """One frame's decision. A stretch of speech that does not count yet is forgotten (as silence) once
    ``trailing_silence`` passes without speech."""
    t, fs = state.frames, state.frame_seconds
    assert fs is not None
    if speech:
        first = t if state.speech_start is None else state.speech_start
        return replace(state, frames=t + 1, speech_start=first, speech_end=t + 1, speech_frames=state.speech_frames + 1)
    state = replace(state, frames=t + 1)
    if (
        state.speech_end is not None
        and not _is_speech(config, state)
        and (t + 1 - state.speech_end) * fs >= config.trailing_silence - _EPS
    ):
        state = replace(state, speech_start=None, speech_end=None, speech_frames=0)
    return state


def _is_speech(config: EndpointConfig, state: EndpointState) -> bool:
    """Whether the segment holds a stretch with ``min_speech`` seconds of speech frames."""
    assert state.frame_seconds is not None
    return state.speech_frames > 0 and state.speech_frames * state.frame_seconds >= config.min_speech - _EPS


def _check(config: EndpointConfig, state: EndpointState, decoded: bool) -> Endpoint | None:
    """The rule that fires now, if any; rules 1 and 2 wait while speech frames go on."""
    assert state.frame_seconds is not None
    now, fs = state.frames, state.frame_seconds
    if state.speech_end != now:
        silence = (now - (state.speech_end if state.speech_end is not None else state.segment_start)) * fs
        if not decoded and silence >= config.silence_before_speech - _EPS:
            return _endpoint(config, state, "silence_before_speech", decoded)
        if decoded and silence >= config.trailing_silence - _EPS:
            return _endpoint(config, state, "trailing_silence", decoded)
    if (now - state.segment_start) * fs >= config.max_segment - _EPS:
        return _endpoint(config, state, "max_segment", decoded)
    return None


def _endpoint(config: EndpointConfig, state: EndpointState, rule: Rule, decoded: bool) -> Endpoint:
    """An endpoint now, closing the segment's speech widened by the padding within the segment: nothing
    when nothing was decoded, the whole segment when a recognizer decoded something without speech frames."""
    assert state.frame_seconds is not None
    fs, begin, now = state.frame_seconds, state.segment_start * state.frame_seconds, state.frames * state.frame_seconds
    segment = None
    if decoded and state.speech_start is not None and state.speech_end is not None:
        start = max(begin, state.speech_start * fs - config.padding)
        segment = SpeechSegment(start=_round(start), end=_round(min(now, state.speech_end * fs + config.padding)))
    elif decoded:
        segment = SpeechSegment(start=_round(begin), end=_round(now))
    return Endpoint(time=_round(now), rule=rule, segment=segment)


def _round(seconds: float) -> float:
    """Seconds rounded to the microsecond, dropping the float noise of frames times a frame duration."""
    return round(seconds, 6)


class Endpointer:
    """One stream's endpoint state with the rules: ``update`` feeds the next frames' decisions and returns
    the endpoints they triggered (an empty list, falsy, when none)."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.state = EndpointState()

    def update(
        self, speech: Tensor | Sequence[bool] | Sequence[float], frame_seconds: float, *, decoded: bool | None = None
    ) -> list[Endpoint]:
        """Decisions (T,) for the next frames -> endpoints; see ``advance`` for ``decoded``."""
        self.state, endpoints = advance(self.config, self.state, speech, frame_seconds, decoded=decoded)
        return endpoints

    def finish(self) -> list[Endpoint]:
        """End of stream: the speech of the segment in progress, if any."""
        self.state, endpoints = finish(self.config, self.state)
        return endpoints

    def reset(self) -> None:
        """Start a new segment now (the stream's clock keeps running); a no-op right after an endpoint."""
        self.state = reset(self.state)


def iter_segments(chunks: Iterable[Tensor], vad: SileroVAD, config: EndpointConfig) -> Iterator[SpeechSegment]:
    """Speech segments of one stream given as (n,) chunks at ``vad.sample_rate``, each yielded as soon as
    its endpoint fires; memory is bounded by the largest chunk, whatever the stream's length."""
    for segment, _ in iter_speech(chunks, vad, config, keep_audio=False):
        yield segment


def iter_speech(chunks: Iterable[Tensor], vad: SileroVAD, config: EndpointConfig, *,
                keep_audio: bool = True) -> Iterator[tuple[SpeechSegment, Tensor]]:
    """``iter_segments`` with each segment's samples (n,) (empty without ``keep_audio``). Only the audio of the
    segment in progress is kept (at most ``max_segment``, ``silence_before_speech`` or ``trailing_silence`` and
    a chunk), so a recording of any length is cut into pieces in bounded memory."""
    vad_state, state, samples = vad.init_state(), EndpointState(), 0
    kept, first = torch.zeros(0), 0  # kept audio and the sample it starts at

    def cut(segment: SpeechSegment) -> Tensor:
        begin, end = round(segment.start * vad.sample_rate) - first, round(segment.end * vad.sample_rate) - first
        return kept[max(begin, 0) : max(end, 0)].clone() if keep_audio else kept[:0]

    for chunk in chunks:
        probs, vad_state = vad.accept(chunk, vad_state)  # (K,)
        samples += chunk.numel()
        kept = torch.cat([kept, chunk.float()]) if keep_audio else kept
        state, endpoints = advance(config, state, probs, vad.frame_seconds)
        yield from ((e.segment, cut(e.segment)) for e in endpoints if e.segment is not None)
        drop = min(state.segment_start * vad.window, samples) - first  # nothing before the segment in progress
        kept, first = kept[drop:], first + drop
    probs, vad_state = vad.finish(vad_state)  # the last window, zero-padded past the end
    state, endpoints = advance(config, state, probs, vad.frame_seconds)
    _, last = finish(config, state)
    duration = samples / vad.sample_rate
    for e in endpoints + last:
        if e.segment is not None and e.segment.start < duration:
            segment = SpeechSegment(start=e.segment.start, end=min(e.segment.end, _round(duration)))
            yield segment, cut(segment)


def segment_audio(
    pcm: Tensor | Iterable[Tensor],
    sample_rate: int,
    vad: SileroVAD,
    config: EndpointConfig,
    *,
    chunk_seconds: float = 0.5,
) -> list[tuple[float, float]]:
    """(start, end) seconds of the speech in a recording: a whole (n,) waveform, fed to the VAD in
    ``chunk_seconds`` views, or any iterable of (n,) chunks (a generator reading a file block by block)."""
    if sample_rate != vad.sample_rate:
        raise ValueError(f"audio at {sample_rate} Hz but the VAD runs at {vad.sample_rate} Hz; resample first")
    if isinstance(pcm, Tensor):
        if pcm.dim() != 1:
            raise ValueError(f"expected mono samples of shape (n,), got {tuple(pcm.shape)}")
        pcm = pcm.split(max(1, round(chunk_seconds * sample_rate)))
    return [(s.start, s.end) for s in iter_segments(pcm, vad, config)]
