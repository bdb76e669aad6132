"""Many live streams sharing the encoder: ``StreamBatch``.

A server adds a ``StreamSession`` per connection, feeds it PCM whenever packets arrive, and calls ``step()``
every few milliseconds: each call is one round in which every stream with a whole chunk buffered (or a last
partial chunk after ``finish``) advances by exactly one chunk, all of them in ONE encoder call
(``CTCModel.forward_chunks``: per-stream caches of different lengths, left-padded and masked, each stream at
its own absolute frame). The CTC prefix search, endpointing and rescoring stay per stream, in the sessions.
Streams join and leave at any chunk; an endpoint resets one stream's caches and no other's. A stream gives
exactly the partials and segments it gives alone (``StreamSession.accept``), whoever shares its rounds::

    batch = StreamBatch(chunk_size=16)
    key = batch.add(recognizer.stream(640))
    batch.feed(key, pcm)              # any time, any size
    for update in batch.step():       # advances every ready stream by one chunk
        update.key, update.partial, update.segments, update.done
    batch.finish(key)                 # end of input; later rounds flush its last chunk, then ``done``
    batch.remove(key)

Dimension letters: B streams in a round, T' encoder frames of a chunk, D model size.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from transduce.streaming.session import Segment, StreamSession


@dataclass
class StreamUpdate:
    """What one round did to one stream: its partial text after the chunk, the segments the chunk finished
    (an endpoint, or the last ones at the end of input) and whether the stream is done."""

    key: int
    partial: str
    segments: list[Segment]
    done: bool


class StreamBatch:
    """Stream sessions of one model with the same chunking, advanced together one chunk per round."""

    def __init__(self, *, chunk_size: int, left_chunks: int = -1) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive encoder frames, got {chunk_size}")
        self.chunk_size, self.left_chunks = chunk_size, left_chunks
        self.sessions: dict[int, StreamSession] = {}
        self._keys = itertools.count()
        self._starved: set[int] = set()  # streams that had no whole chunk and got no audio since

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, session: StreamSession) -> int:
        """Join a new stream (at any round) -> its key."""
        first = next(iter(self.sessions.values()), None)
        if first is not None and session.model is not first.model:
            raise ValueError("the streams of a batch share one model; this session has another")
        settings = session.settings
        if (settings.chunk_size, settings.left_chunks) != (self.chunk_size, self.left_chunks):
            raise ValueError(f"this batch runs chunk_size={self.chunk_size}, left_chunks={self.left_chunks}; the "
                             f"session has {settings.chunk_size}, {settings.left_chunks}")
        key = next(self._keys)
        self.sessions[key] = session
        return key

    def feed(self, key: int, pcm: Tensor) -> None:
        """Buffer the next (n,) samples of stream ``key``; the next rounds encode them."""
        self.sessions[key].push(pcm)
        self._starved.discard(key)

    def finish(self, key: int) -> None:
        """End of input for stream ``key``: rounds flush its buffered chunks and close its last segment."""
        self.sessions[key].close()
        self._starved.discard(key)

    def partial(self, key: int) -> str:
        return self.sessions[key].partial()

    def remove(self, key: int) -> StreamSession:
        """Leave the batch (done or not) -> the session."""
        self._starved.discard(key)
        return self.sessions.pop(key)

    @torch.no_grad()
    def step(self) -> list[StreamUpdate]:
        """One round: every stream with a whole chunk (or its end) advances one chunk, all in one encoder call.
        Returns an update per stream that advanced; an empty list when none could (wait for audio)."""
        started = time.perf_counter()
        keys = [k for k, s in self.sessions.items() if not s.done and k not in self._starved]
        if not keys:
            return []
        sessions = [self.sessions[k] for k in keys]
        model = sessions[0].model
        out, lens, states = model.forward_chunks(
            [s.take_input() for s in sessions], [s.encoder for s in sessions], chunk_size=self.chunk_size,
            left_chunks=self.left_chunks, final=[s.closing for s in sessions])  # (B, T', D), (B,)
        updates = []
        for i, (key, session) in enumerate(zip(keys, sessions, strict=True)):
            n = int(lens[i])
            if n == 0 and not session.closing:
                session.encoder = states[i]
                self._starved.add(key)
                continue
            segments = session.receive(out[i, :n], states[i])
            updates.append(StreamUpdate(key, session.partial(), segments, session.done))
        elapsed = time.perf_counter() - started
        for update in updates:
            self.sessions[update.key].stats.chunk_seconds.append(elapsed)
        return updates
