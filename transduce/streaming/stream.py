"""Chunk-by-chunk recognition of one live audio stream: ``Recognizer.stream()``.

PCM of any chunk size -> streaming log-mel frames (identical to whole-utterance features) -> the
Conformer's ``forward_chunk`` (chunk masks + bounded caches) -> CTC prefix beam search carried across
chunks (``partial()`` after every chunk) -> at each endpoint, attention rescoring of the n-best (hybrid
models) and a final ``Segment`` with timestamps; then the encoder caches and the search start afresh,
so memory stays flat however long the stream runs.

Dimension letters: N new feature frames, F feature bins, T' encoder frames, D model size, V vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from transduce.data.features import StreamingFbank
from transduce.decoding.ctc import BLANK, CTCHypothesis, CTCPrefixSearch
from transduce.decoding.joint import attention_rescore
from transduce.decoding.lm_fusion import LMFusion
from transduce.streaming.endpoint import EndpointConfig, Endpointer
from transduce.streaming.vad import SileroVAD

if TYPE_CHECKING:
    from transduce.recognize import Recognizer


@dataclass
class Segment:
    """A finished piece of the stream: times in seconds from the stream's start, the text, and each
    token's start time."""

    start: float
    end: float
    text: str
    tokens: list[str]
    times: list[float]


@dataclass
class StreamStats:
    """What a stream measured: seconds of compute per ``accept`` call (a chunk), audio seconds received,
    when the first non-empty partial appeared (audio seconds received by then) and the start time of the
    token that made it non-empty: their difference is the first-partial latency in audio time."""

    chunk_seconds: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    first_partial_at: float | None = None
    first_token_time: float | None = None


class Stream:
    """``accept(pcm)`` -> segments finished by it; ``partial()`` -> the best hypothesis of the segment in
    progress; ``finalize()`` -> the last segments at end of input. Single stream, inference only."""

    def __init__(
        self, recognizer: Recognizer, *, chunk_size: int, left_chunks: int = -1, beam: int = 4,
        rescore: bool = True, ctc_weight: float = 0.5, reverse_weight: float = 0.0,
        endpoint: EndpointConfig | None = None, vad: SileroVAD | None = None, fusion: LMFusion | None = None,
    ) -> None:
        """``vad``: decide speech/silence for the endpoint rules with silero-vad on the audio instead of
        the recognizer's own blank frames (needs ``endpoint``). ``fusion``: a language model in the CTC search."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive encoder frames, got {chunk_size}")
        self.recognizer, self.model = recognizer, recognizer.model
        self.chunk_size, self.left_chunks, self.beam = chunk_size, left_chunks, beam
        self.rescore = rescore and self.model.decoder is not None
        self.ctc_weight, self.reverse_weight = ctc_weight, reverse_weight
        self.frame_seconds = recognizer.seconds_per_output
        self.fbank = StreamingFbank(recognizer.fbank)
        self.endpointer = Endpointer(endpoint) if endpoint is not None else None
        if vad is not None and endpoint is None:
            raise ValueError("a VAD only drives endpointing: give an EndpointConfig too")
        self.vad, self.fusion = vad, fusion
        self.vad_state = vad.init_state() if vad is not None else None
        self.encoder = self.model.init_stream(1, recognizer.device)
        self.stats = StreamStats()
        pieces = recognizer.tokenizer.id_to_piece(list(range(len(recognizer.tokenizer))))
        # blank and word-boundary pieces: CTC models put the boundary in the pauses between words
        self.silent_ids = torch.tensor([BLANK] + [i for i, p in enumerate(pieces) if p == "▁"])
        self.offset = 0  # encoder frames before the current segment
        self._new_segment()

    def _new_segment(self) -> None:
        self.search = CTCPrefixSearch(beam=self.beam, fusion=self.fusion)
        self.memory: list[Tensor] = []  # (T', D) encoder chunks of the segment, for rescoring

    @torch.no_grad()
    def accept(self, pcm: Tensor) -> list[Segment]:
        """Feed the next (n,) float samples at the model's rate; returns the segments they finished."""
        started = time.perf_counter()
        frames = self.fbank.accept(pcm.float())  # (N, F)
        out, self.encoder = self.model.forward_chunk(frames[None].to(self.recognizer.device), self.encoder,
                                                     chunk_size=self.chunk_size, left_chunks=self.left_chunks)
        voice = None
        if self.vad is not None and self.vad_state is not None:
            voice, self.vad_state = self.vad.accept(pcm.float(), self.vad_state)  # (K,) speech probabilities
        segments = self._consume(out[0], voice)
        self.stats.audio_seconds += pcm.numel() / self.recognizer.sample_rate
        self.stats.chunk_seconds.append(time.perf_counter() - started)
        if self.stats.first_partial_at is None and self.partial():
            self.stats.first_partial_at = self.stats.audio_seconds
            newest = self.search.nbest(1)[0].timestamps[-1]  # the token that made the text non-empty
            self.stats.first_token_time = (self.offset + newest) * self.frame_seconds
        return segments

    def _consume(self, out: Tensor, voice: Tensor | None = None) -> list[Segment]:
        """Encoder frames (T', D) of whole chunks [+ VAD probabilities (K,) of the new audio] -> search,
        endpoint check, segments finished."""
        if out.size(0) == 0 and voice is None:
            return []
        log_probs = self.model.ctc_log_probs(out).cpu()  # (T', V)
        self.search.advance(log_probs)
        if self.rescore and out.size(0):
            self.memory.append(out)
        if self.endpointer is None or (self.vad is not None and voice is None):  # finalize: no new audio
            return []
        if voice is not None and self.vad is not None:
            fired = self.endpointer.update(voice, self.vad.frame_seconds, decoded=bool(self.partial()))
        else:
            speech = ~torch.isin(log_probs.argmax(-1), self.silent_ids)  # (T',) CTC emits a sounding token there
            fired = self.endpointer.update(speech, self.frame_seconds, decoded=bool(self.partial()))
        if not fired:
            return []
        segment = self._finish()
        self.endpointer.reset()
        leftover = self.encoder.feats  # feature frames not yet encoded belong to the next segment
        self.encoder = self.model.init_stream(1, self.recognizer.device)
        self.encoder.feats = leftover
        return [segment] if segment is not None else []

    def _finish(self) -> Segment | None:
        """Close the current segment (rescoring its n-best) and start the next one."""
        frames = self.search.frames
        nbest = self.search.nbest(self.beam if self.rescore else 1, final=True)
        best = nbest[0] if nbest else CTCHypothesis([], 0.0, [])
        if self.rescore and best.tokens:
            memory = torch.cat(self.memory)[None]  # (1, T', D)
            index, _ = attention_rescore(
                self.model.attention_decoder(), memory, torch.tensor([memory.size(1)], device=memory.device),
                [[h.tokens for h in nbest]], [[h.score for h in nbest]], ctc_weight=self.ctc_weight,
                reverse_decoder=self.model.reverse_decoder, reverse_weight=self.reverse_weight)[0]
            best = nbest[index]
        start = self.offset * self.frame_seconds
        self.offset += frames
        self._new_segment()
        tok = self.recognizer.tokenizer
        text = tok.decode([best.tokens])[0].strip()
        if not text:  # silence, or only a word-boundary piece
            return None
        return Segment(start=round(start, 3), end=round(self.offset * self.frame_seconds, 3),
                       text=text, tokens=tok.id_to_piece(best.tokens),
                       times=[round(start + t * self.frame_seconds, 3) for t in best.timestamps])

    def partial(self) -> str:
        """Best hypothesis of the segment in progress (after the chunks received so far)."""
        best = self.search.nbest(1)
        return self.recognizer.tokenizer.decode([best[0].tokens])[0].strip() if best else ""

    @torch.no_grad()
    def finalize(self) -> list[Segment]:
        """End of input: encode what is buffered (the last partial chunk) and close the segment."""
        out, self.encoder = self.model.forward_chunk(self.encoder.feats[:, :0], self.encoder,
                                                     chunk_size=self.chunk_size, left_chunks=self.left_chunks,
                                                     final=True)
        segments = self._consume(out[0])
        last = self._finish()
        return segments + ([last] if last is not None else [])


def feed(stream: Stream, wave: Tensor, chunk_ms: float, on_partial: Callable[[str], None] | None = None,
         realtime: bool = False) -> list[Segment]:
    """Feed a whole (n,) waveform to ``stream`` ``chunk_ms`` of audio at a time, as a live source would
    (``realtime``: no faster than real time), calling ``on_partial`` when the partial text changes; returns
    every segment, the last ones from ``finalize``."""
    rate = stream.recognizer.sample_rate
    step = max(1, round(chunk_ms / 1000 * rate))
    segments: list[Segment] = []
    shown = ""
    for start in range(0, wave.numel(), step):
        chunk = wave[start : start + step]
        segments += stream.accept(chunk)
        if on_partial is not None and stream.partial() != shown:
            shown = stream.partial()
            on_partial(shown)
        if realtime:
            time.sleep(max(0.0, chunk.numel() / rate - stream.stats.chunk_seconds[-1]))
    return segments + stream.finalize()
