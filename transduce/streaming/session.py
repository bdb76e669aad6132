"""One live audio stream's recognition, built from explicit parts: a ``StreamSession``.

Parts: the model (causal Conformer encoder + CTC head [+ attention decoders for rescoring]), its tokenizer,
its log-mel front end (``Fbank``) and ``StreamSettings`` (chunking, search, rescoring, endpointing, VAD,
LM fusion). The session never sees a ``Recognizer``.

PCM of any packet size -> streaming log-mel frames (identical to whole-utterance features) -> the encoder,
ONE chunk at a time (``CTCModel.forward_chunks``: alone here, or batched with other streams by
``StreamBatch``) -> CTC prefix beam search carried across chunks -> an endpoint check after every chunk ->
at each endpoint, attention rescoring of the n-best (hybrid models) and a final ``Segment`` with
timestamps; then the encoder caches and the search start afresh, so memory stays flat however long the
stream runs. Because the encoder always advances by whole chunks and the endpoint rules see each chunk,
results do not depend on how the audio was packetized nor on which streams shared an encoder call.

Dimension letters: N new feature frames, F feature bins, T' encoder frames, D model size, V vocabulary,
K VAD windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from transduce.data.features import Fbank, StreamingFbank
from transduce.data.tokenizer import Tokenizer
from transduce.decoding.ctc import BLANK, CTCHypothesis, CTCPrefixSearch
from transduce.decoding.joint import attention_rescore
from transduce.decoding.lm_fusion import LMFusion
from transduce.models.ctc import CTCModel
from transduce.nn.conformer import ConformerEncoder
from transduce.nn.stream_state import EncoderStreamState
from transduce.streaming.endpoint import EndpointConfig, Endpointer
from transduce.streaming.vad import SileroVAD


@dataclass(kw_only=True)
class StreamSettings:
    """How a stream is chunked, searched, rescored and cut into segments."""

    chunk_size: int
    """Encoder frames per chunk (the latency step)."""
    left_chunks: int = -1
    """Earlier chunks each chunk attends to (-1 = all since the last endpoint)."""
    beam: int = 4
    """CTC prefix beam width (also the n-best size that rescoring ranks)."""
    token_prune: int = 0
    """Tokens the search expands per frame, the likeliest first (0 = all), as ``decode.token_prune`` offline."""
    rescore: bool = True
    """Rank the n-best with the attention decoder(s) at each endpoint (ignored for a CTC-only model)."""
    ctc_weight: float = 0.5
    """Weight of the CTC score in rescoring."""
    reverse_weight: float = 0.0
    """Share of the right-to-left decoder in rescoring."""
    endpoint: EndpointConfig | None = None
    """Segmentation rules; None = one segment until ``finalize``."""
    vad: SileroVAD | None = None
    """Speech/silence decisions for the endpoint rules from silero-vad (else from the CTC blanks)."""
    fusion: LMFusion | None = None
    """A language model in the CTC search (shallow fusion)."""

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive encoder frames, got {self.chunk_size}")
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.token_prune < 0:
            raise ValueError(f"token_prune must be >= 0, got {self.token_prune}")
        if self.vad is not None and self.endpoint is None:
            raise ValueError("a VAD only drives endpointing: give an EndpointConfig too")


def unstreamable(model: CTCModel) -> str | None:
    """Why ``model`` cannot stream, as "model.FIELD: reason" naming its config field; None when it can."""
    if not isinstance(model, CTCModel):  # an exported model (``transduce/export``) knows it from its export
        return model.unstreamable()
    if not isinstance(model.encoder, ConformerEncoder):
        return ("model.encoder: a transformer encoder cannot stream (absolute positions); streaming needs a "
                "conformer with model.causal_conv: true")
    if not model.encoder.causal:
        return ("model.causal_conv: false, so this model cannot stream (its convolutions see future frames); "
                "train one with model.causal_conv: true")
    if model.utterance_norm:
        return "model.utterance_norm: true needs the whole utterance, so this model cannot stream"
    return None


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
    """What a stream measured: seconds of compute per ``accept`` call (per batch round in a ``StreamBatch``),
    audio seconds received, when the first non-empty partial appeared (audio seconds received by then) and
    the start time of the token that made it non-empty: their difference is the first-partial latency."""

    chunk_seconds: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    first_partial_at: float | None = None
    first_token_time: float | None = None


class StreamSession:
    """``accept(pcm)`` -> segments finished by it; ``partial()`` -> the best hypothesis of the segment in
    progress; ``finalize()`` -> the last segments at end of input. Inference only.

    A ``StreamBatch`` drives many sessions through the lower-level ``push`` / ``take_input`` / ``receive``."""

    def __init__(self, model: CTCModel, tokenizer: Tokenizer, fbank: Fbank, settings: StreamSettings) -> None:
        if (why := unstreamable(model)) is not None:
            raise ValueError(why)
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.device = next(model.parameters(), torch.empty(0)).device  # an exported model has none: the CPU
        self.encoder: EncoderStreamState = model.init_stream(1, self.device)
        self.rescore = settings.rescore and model.decoder is not None
        self.sample_rate = fbank.cfg.sample_rate
        self.frame_seconds = fbank.cfg.frame_shift / self.sample_rate * model.encoder.subsampling.factor
        self.features = StreamingFbank(fbank)
        self.pending = torch.zeros(0, fbank.cfg.num_mel_bins)  # (N, F) frames not yet given to the encoder
        self.endpointer = Endpointer(settings.endpoint) if settings.endpoint is not None else None
        self.vad = settings.vad
        self.vad_state = self.vad.init_state() if self.vad is not None else None
        self.voice = torch.zeros(0)  # (K,) VAD probabilities not yet given to the endpoint rules
        self.voice_windows = 0  # VAD windows given to the endpoint rules so far
        self.stats = StreamStats()
        pieces = tokenizer.id_to_piece(list(range(len(tokenizer))))
        # blank and word-boundary pieces: CTC models put the boundary in the pauses between words
        self.silent_ids = torch.tensor([BLANK] + [i for i, p in enumerate(pieces) if p == "▁"])
        self.offset = 0  # encoder frames before the current segment
        self.closing = False  # end of input received: the next chunks flush what is buffered
        self.done = False  # the last segment is closed
        self._partial: tuple[tuple[int, ...], str] = ((), "")  # the last partial's tokens and text
        self._new_segment()

    def _new_segment(self) -> None:
        self.search = CTCPrefixSearch(beam=self.settings.beam, token_prune=self.settings.token_prune,
                                      fusion=self.settings.fusion)
        self.memory: list[Tensor] = []  # (T', D) encoder chunks of the segment, for rescoring

    # -- single stream -------------------------------------------------------------------------------------
    @torch.no_grad()
    def accept(self, pcm: Tensor) -> list[Segment]:
        """Feed the next (n,) float samples at the model's rate; returns the segments they finished."""
        started = time.perf_counter()
        self.push(pcm)
        segments: list[Segment] = []
        while (found := self._advance_alone()) is not None:
            segments += found
        self.stats.chunk_seconds.append(time.perf_counter() - started)
        return segments

    @torch.no_grad()
    def finalize(self) -> list[Segment]:
        """End of input: encode what is buffered (the last partial chunk) and close the segment."""
        self.close()
        segments: list[Segment] = []
        while not self.done:
            segments += self._advance_alone() or []
        return segments

    def _advance_alone(self) -> list[Segment] | None:
        """One chunk through the encoder with this stream alone -> its segments, None when no chunk was ready."""
        out, lens, [state] = self.model.forward_chunks(
            [self.take_input()], [self.encoder], chunk_size=self.settings.chunk_size,
            left_chunks=self.settings.left_chunks, final=[self.closing])
        if int(lens[0]) == 0 and not self.closing:
            self.encoder = state
            return None
        return self.receive(out[0, : int(lens[0])], state)

    # -- the steps a batch drives ----------------------------------------------------------------------------
    def push(self, pcm: Tensor) -> None:
        """Buffer the next (n,) samples: their complete feature frames and VAD probabilities."""
        if self.closing:
            raise ValueError("audio after the end of input: this stream was finalized")
        if pcm.dim() != 1:
            raise ValueError(f"expected mono samples of shape (n,), got {tuple(pcm.shape)}")
        frames = self.features.accept(pcm.float())  # (N, F)
        self.pending = torch.cat([self.pending, frames.to(self.pending)])
        if self.vad is not None and self.vad_state is not None:
            probs, self.vad_state = self.vad.accept(pcm.float(), self.vad_state)  # (K,)
            self.voice = torch.cat([self.voice, probs])
        self.stats.audio_seconds += pcm.numel() / self.sample_rate

    def close(self) -> None:
        """End of input: no more ``push``; the chunks still buffered, then a last partial one, follow."""
        self.closing = True

    def take_input(self) -> Tensor:
        """The buffered feature frames (N, F), on the model's device, for the next encoder call."""
        frames, self.pending = self.pending, self.pending[:0]
        return frames.to(self.device)

    def receive(self, out: Tensor, state: EncoderStreamState) -> list[Segment]:
        """This stream's share of an encoder call: output (T', D) of one chunk (T' < chunk_size: the last,
        once closing) and its new state -> search, endpoint check, the segments finished."""
        final = self.closing and out.size(0) < self.settings.chunk_size
        self.encoder = state
        segments = self._consume(out, final)
        if self.stats.first_partial_at is None and self.partial():
            self.stats.first_partial_at = self.stats.audio_seconds
            newest = self.search.nbest(1)[0].timestamps[-1]  # the token that made the text non-empty
            self.stats.first_token_time = (self.offset + newest) * self.frame_seconds
        if final:
            last = self._finish()
            segments += [last] if last is not None else []
            self.done = True
        return segments

    def _voice(self) -> Tensor:
        """VAD probabilities (K,) of the windows that end by the end of the encoder frames consumed so far."""
        assert self.vad is not None
        end = (self.offset + self.search.frames) * self.frame_seconds
        count = int(end / self.vad.frame_seconds + 1e-6) - self.voice_windows
        probs, self.voice = self.voice[: max(count, 0)], self.voice[max(count, 0) :]
        self.voice_windows += probs.numel()
        return probs

    def _consume(self, out: Tensor, final: bool) -> list[Segment]:
        """Encoder frames (T', D) of one chunk -> search, endpoint check (not on the last chunk of a stream
        whose endpoints come from a VAD), segments finished."""
        if out.size(0) == 0:
            return []
        log_probs = self.model.ctc_log_probs(out).cpu()  # (T', V)
        self.search.advance(log_probs)
        if self.rescore:
            self.memory.append(out)
        if self.endpointer is None or (self.vad is not None and final):
            return []
        if self.vad is not None:
            fired = self.endpointer.update(self._voice(), self.vad.frame_seconds, decoded=bool(self.partial()))
        else:
            speech = ~torch.isin(log_probs.argmax(-1), self.silent_ids)  # (T',) CTC emits a sounding token there
            fired = self.endpointer.update(speech, self.frame_seconds, decoded=bool(self.partial()))
        if not fired:
            return []
        segment = self._finish()
        self.endpointer.reset()
        fresh = self.model.init_stream(1, self.device)  # new caches; the frames not yet encoded stay
        self.encoder = EncoderStreamState(self.encoder.feats, fresh.layers, 0)
        return [segment] if segment is not None else []

    def _finish(self) -> Segment | None:
        """Close the current segment (rescoring its n-best) and start the next one."""
        frames = self.search.frames
        nbest = self.search.nbest(self.settings.beam if self.rescore else 1, final=True)
        best = nbest[0] if nbest else CTCHypothesis([], 0.0, [])
        if self.rescore and best.tokens:
            memory = torch.cat(self.memory)[None]  # (1, T', D)
            index, _ = attention_rescore(
                self.model.attention_decoder(), memory, torch.tensor([memory.size(1)], device=memory.device),
                [[h.tokens for h in nbest]], [[h.score for h in nbest]], ctc_weight=self.settings.ctc_weight,
                reverse_decoder=self.model.reverse_decoder, reverse_weight=self.settings.reverse_weight)[0]
            best = nbest[index]
        start = self.offset * self.frame_seconds
        self.offset += frames
        self._new_segment()
        text = self.tokenizer.decode([best.tokens])[0].strip()
        if not text:  # silence, or only a word-boundary piece
            return None
        return Segment(start=round(start, 3), end=round(self.offset * self.frame_seconds, 3),
                       text=text, tokens=self.tokenizer.id_to_piece(best.tokens),
                       times=[round(start + t * self.frame_seconds, 3) for t in best.timestamps])

    def partial(self) -> str:
        """Best hypothesis of the segment in progress (after the chunks encoded so far), decoded only when its
        tokens changed since the last call (a partial is asked for after every chunk; most chunks add none)."""
        best = self.search.nbest(1)
        tokens = tuple(best[0].tokens) if best else ()
        if tokens != self._partial[0]:
            self._partial = (tokens, self.tokenizer.decode([list(tokens)])[0].strip() if tokens else "")
        return self._partial[1]
