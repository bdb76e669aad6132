"""The live streams of one speech model, advanced together: ``StreamHub``.

Every WebSocket connection is a ``StreamSession`` in the model's one ``StreamBatch``. Connections feed PCM as
it arrives; one loop per model runs rounds (``StreamBatch.step``: every stream with a whole chunk buffered
advances by one chunk, ALL of them in one encoder call) whenever audio came in, after a few milliseconds in
which the other streams' packets can land, and turns each round's updates into the events of the issue's
protocol on each connection's queue:

    {"type": "partial", "text": ...}                         the hypothesis changed
    {"type": "final", "text": ..., "start": s, "end": s,     a segment closed (an endpoint, or the end), with
     "_audio": samples}                                      its audio (the socket records it, sends the rest)
    None                                                     the stream is done: close it

Batch calls run in one worker thread per model, in order, so the event loop keeps reading sockets while the
encoder works and no two threads touch the batch. Memory is bounded per stream: a connection whose audio runs
more than ``queue_seconds`` ahead of the encoder is not read until the encoder catches up (``feed`` waits),
so a client sending faster than real time is throttled instead of buffered. A stream removed (the client
went away) leaves the batch at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from torch import Tensor

from transduce.recognize import Recognizer
from transduce.server.limits import LimitError, PcmReader
from transduce.server.metrics import Metrics
from transduce.streaming.batch import StreamBatch, StreamUpdate
from transduce.streaming.endpoint import EndpointConfig

if TYPE_CHECKING:
    from transduce.server.app import Served

T = TypeVar("T")
Event = dict[str, Any] | None


KEEP_SECONDS = 30.0
"""Audio kept per stream for the ``_audio`` of its finals (a segment is at most ``max_segment``, 20 s)."""


@dataclass
class _Stream:
    """One connection's side of the hub: its event queue, the last partial it was sent, and its latest audio
    (from ``kept_from`` seconds after the stream's start) for the finals."""

    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    shown: str = ""
    finished: bool = False
    failed: bool = False
    audio: list[Tensor] = field(default_factory=list)
    kept_from: float = 0.0

    def keep(self, pcm: Tensor, sample_rate: int) -> None:
        """Append samples (n,), forgetting all but the last ``KEEP_SECONDS``."""
        self.audio.append(pcm)
        held = sum(a.numel() for a in self.audio)
        while held > KEEP_SECONDS * sample_rate and len(self.audio) > 1:
            held -= self.audio[0].numel()
            self.kept_from += self.audio.pop(0).numel() / sample_rate

    def cut(self, start: float, end: float, sample_rate: int) -> Tensor:
        """The samples (n,) from ``start`` to ``end`` seconds; what came before ``end`` is forgotten."""
        audio = torch.cat(self.audio) if self.audio else torch.zeros(0)
        first, last = (max(0, round((t - self.kept_from) * sample_rate)) for t in (start, end))
        self.audio, self.kept_from = [audio[last:]], self.kept_from + min(last, audio.numel()) / sample_rate
        return audio[first:last]


class StreamHub:
    """Stream sessions of one speech model in one ``StreamBatch``. ``start()`` in the running loop."""

    def __init__(self, recognizer: Recognizer, *, chunk_ms: float = 640.0, endpoint: EndpointConfig | None = None,
                 queue_seconds: float = 2.0, gather_seconds: float = 0.004, metrics: Metrics | None = None) -> None:
        self.recognizer, self.chunk_ms, self.endpoint = recognizer, chunk_ms, endpoint
        left = recognizer.config.decode.left_chunks
        self.batch = StreamBatch(chunk_size=recognizer.chunk_frames(chunk_ms), left_chunks=left)
        recognizer.stream(chunk_ms, endpoint=endpoint)  # a model that cannot stream fails here, at load
        self.chunk_seconds = self.batch.chunk_size * recognizer.seconds_per_output
        self.frame_seconds = recognizer.fbank.cfg.frame_shift / recognizer.sample_rate  # one feature frame
        self.queue_seconds = max(queue_seconds, 2 * self.chunk_seconds)  # below two chunks a stream could starve
        self.gather_seconds = gather_seconds
        self.metrics = metrics or Metrics()
        self.streams: dict[int, _Stream] = {}
        self.rounds = 0  # encoder rounds run
        self._executor: ThreadPoolExecutor | None = None
        self._wake: asyncio.Event | None = None
        self._round: asyncio.Event | None = None  # set (and replaced) after every round
        self._task: asyncio.Task | None = None

    @property
    def sample_rate(self) -> int:
        return self.recognizer.sample_rate

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="streams")
        self._wake, self._round = asyncio.Event(), asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> tuple[int, asyncio.Queue[Event]]:
        """A new stream -> its key and the queue its events arrive on."""
        session = await self._call(lambda: self.recognizer.stream(self.chunk_ms, endpoint=self.endpoint))
        key = await self._call(self.batch.add, session)
        self.streams[key] = _Stream()
        return key, self.streams[key].events

    def buffered_seconds(self, key: int) -> float:
        """Audio of stream ``key`` received but not yet encoded."""
        session = self.batch.sessions.get(key)
        return 0.0 if session is None else session.pending.size(0) * self.frame_seconds

    async def feed(self, key: int, pcm: Tensor) -> None:
        """Give stream ``key`` the next samples (n,); waits while it is ``queue_seconds`` ahead of the encoder."""
        assert self._wake is not None
        piece = max(1, int(self.chunk_seconds * self.sample_rate))
        for start in range(0, pcm.numel(), piece):
            while self.buffered_seconds(key) >= self.queue_seconds and self._open(key):
                assert self._round is not None
                await self._round.wait()
            if not self._open(key):
                return
            await self._call(self.batch.feed, key, pcm[start : start + piece])
            if (stream := self.streams.get(key)) is not None:
                stream.keep(pcm[start : start + piece], self.sample_rate)
            self._wake.set()

    def _open(self, key: int) -> bool:
        stream = self.streams.get(key)
        return stream is not None and not stream.finished and not stream.failed

    async def finish(self, key: int) -> None:
        """End of input: the next rounds flush the stream's last chunk and close its last segment."""
        assert self._wake is not None
        if self._open(key):
            self.streams[key].finished = True
            await self._call(self.batch.finish, key)
            self._wake.set()

    def remove(self, key: int) -> None:
        """The stream leaves the batch now (done, failed or abandoned by its client): next in the worker thread,
        whether or not the caller is being cancelled."""
        if self.streams.pop(key, None) is not None and self._executor is not None:
            self._executor.submit(self._drop, key)

    def _drop(self, key: int) -> None:
        if key in self.batch.sessions:
            self.batch.remove(key)

    async def drain(self) -> None:
        """End of input for every open stream (shutdown): their finals are flushed, then they close."""
        for key in list(self.streams):
            await self.finish(key)

    async def _run(self) -> None:
        assert self._wake is not None and self._round is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.gather_seconds)  # let the other streams' packets land in this round
            while await self._round_once():
                pass

    async def _round_once(self) -> bool:
        """One encoder round over the ready streams; False when none advanced."""
        started = time.perf_counter()
        try:
            keys, updates, error = await self._call(self._step)
        finally:
            self._pulse()
        if error is not None:  # the round's streams fail; the server and later streams go on
            await self._fail(keys, error)
            return False
        if updates:
            self.rounds += 1
            self.metrics.observe("transduce_stream_round_seconds", time.perf_counter() - started)
            self.metrics.observe("transduce_stream_round_streams", len(updates), bounds=(1, 2, 4, 8, 16, 32, 64, 128))
        for update in updates:
            self._dispatch(update)
        return bool(updates)

    def _step(self) -> tuple[list[int], list[StreamUpdate], Exception | None]:
        """``batch.step`` in the worker thread -> the streams in the round, its updates, or its error."""
        keys = [k for k, s in self.batch.sessions.items() if not s.done]
        try:
            return keys, self.batch.step(), None
        except Exception as err:  # noqa: BLE001 - reported to the round's streams by _fail
            return keys, [], err

    def _pulse(self) -> None:
        assert self._round is not None
        self._round.set()
        self._round = asyncio.Event()

    def _dispatch(self, update: StreamUpdate) -> None:
        stream = self.streams.get(update.key)
        if stream is None:
            return
        for segment in update.segments:
            audio = stream.cut(segment.start, segment.end, self.sample_rate)  # "_audio": for the record only
            stream.events.put_nowait({"type": "final", "text": segment.text, "start": segment.start,
                                      "end": segment.end, "_audio": audio})
            stream.shown = ""  # the next segment's hypothesis starts empty
        if update.partial and update.partial != stream.shown and not update.done:
            stream.shown = update.partial
            stream.events.put_nowait({"type": "partial", "text": update.partial})
        if update.done:
            stream.events.put_nowait(None)

    async def _fail(self, keys: list[int], err: Exception) -> None:
        message = f"recognition failed: {' '.join(str(err).split()) or type(err).__name__}"
        for key in keys:
            stream = self.streams.get(key)
            if stream is not None and not stream.failed:
                stream.failed = True
                stream.events.put_nowait({"type": "error", "message": message})
                stream.events.put_nowait(None)
        for key in keys:
            await self._call(self._drop, key)


# -- the WebSocket route ----------------------------------------------------------------------------------------
async def stream_socket(ws: WebSocket) -> None:
    """``WS /v1/stream?sample_rate=16000[&model=NAME]``: binary frames of 16-bit little-endian mono PCM and the
    text frame ``{"type": "end"}`` in; partial/final/error events out; closed after the last final. Refused
    before the handshake: a missing API key (401), an unknown model (404), another sample rate (400); after it:
    past ``max_streams`` or while draining (close code 1013 and a reason)."""
    served: Served = ws.app.state.served
    try:
        if not served.limits.authorized(ws.headers, ws.query_params):
            raise LimitError(401, "missing or wrong API key (?api_key= or Authorization: Bearer KEY)")
        model = served.pick("speech", ws.query_params.get("model"))
        assert model.hub is not None
        rate = ws.query_params.get("sample_rate", str(model.hub.sample_rate))
        if rate != str(model.hub.sample_rate):
            raise LimitError(400, f"sample_rate={rate[:20]}: model {model.name} takes {model.hub.sample_rate} Hz "
                                  "16-bit mono PCM; resample on the client")
    except LimitError as err:
        served.metrics.count("transduce_errors_total", route="/v1/stream", status=str(err.status))
        await ws.send_denial_response(JSONResponse({"error": str(err)}, status_code=err.status))
        return
    await ws.accept()
    served.metrics.count("transduce_requests_total", route="/v1/stream")
    if served.draining or served.active_streams >= served.limits.max_streams:
        why = "server shutting down" if served.draining else f"server full: {served.limits.max_streams} streams open"
        served.metrics.count("transduce_errors_total", route="/v1/stream", status="1013")
        await ws.close(code=1013, reason=f"{why}; try again later")
        return
    served.active_streams += 1
    try:
        await _serve_stream(ws, model.hub, served, model.name)
    finally:
        served.active_streams -= 1


async def _serve_stream(ws: WebSocket, hub: StreamHub, served: Served, name: str) -> None:
    key, events = await hub.open()
    sender = asyncio.create_task(_send_events(ws, events, served, name, hub.sample_rate))
    receiver = asyncio.create_task(_receive_audio(ws, hub, key, events, served.limits.idle_seconds))
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if receiver in done and receiver.exception() is None:
            await sender  # input ended: the finals, then the close
    except WebSocketDisconnect:
        pass
    finally:
        hub.remove(key)  # at once, whether the client finished or vanished (and before anything can be cancelled)
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)


async def _send_events(ws: WebSocket, events: asyncio.Queue[Event], served: Served, name: str, rate: int) -> None:
    """Send queued events until the stream is done (None) or refused (a "close" item), then close. Each
    final is recorded with its audio (for feedback) and sent with its ``request_id``."""
    while True:
        event = await events.get()
        if event is None:
            await ws.close(code=1000)
            return
        if event["type"] == "close":
            await ws.close(code=event["code"], reason=event["reason"])
            return
        if event["type"] == "final":
            audio = event.pop("_audio")
            event["request_id"] = served.record(name, event["text"], audio=audio, sample_rate=rate)
        await ws.send_json(event)


async def _receive_audio(ws: WebSocket, hub: StreamHub, key: int, events: asyncio.Queue[Event],
                         idle_seconds: float) -> None:
    """Read frames until ``{"type": "end"}`` (returns) or the client goes away / idles (raises or closes)."""
    reader = PcmReader(hub.sample_rate)
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), idle_seconds)
        except TimeoutError:
            events.put_nowait({"type": "error", "message": f"idle: nothing received for {idle_seconds:g} s"})
            events.put_nowait({"type": "close", "code": 1001, "reason": "idle timeout"})
            return
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            try:
                pcm = reader.read(message["bytes"])
            except LimitError as err:
                events.put_nowait({"type": "error", "message": str(err)})
                events.put_nowait({"type": "close", "code": 1003, "reason": "unsupported audio"})
                return
            await hub.feed(key, pcm)
        elif message.get("text") is not None:
            try:
                control = json.loads(message["text"])
            except json.JSONDecodeError:
                control = None
            if isinstance(control, dict) and control.get("type") == "end":
                await hub.finish(key)
                return
            events.put_nowait({"type": "error", "message": 'unknown text frame; the only one is {"type": "end"}'})
