"""``POST /v1/feedback``: a user's correction of a served result, stored by the library's ``FeedbackStore``.

Body: ``{"model", "input" or "request_id", "output", "correction", "keep_audio"?}``.

- ``model`` names a loaded model (its folder name), never a path.
- ``request_id`` names a result the server gave out recently (the app records each served request in a
  ``RecentRequests``: its model, input text or audio, and output). ``input`` is the source text when the
  client has no request id (a translation it made itself).
- ``keep_audio: true`` writes that request's audio under ``--data-dir`` with the correction; without it no
  audio is ever written (the recent requests live in memory, bounded, and are forgotten in order).

Answers ``{"id"}`` (the stored correction) or a one-line ``{"error"}``: 404 for an unknown model or an
unknown/forgotten request id, 422 for a body that is not JSON of these fields, 400 for one that does not fit (a
request of another model, audio asked of a text request, an empty correction).

How the app wires it (``create_app``): one ``RecentRequests`` for the app; every served result gets an id,
recorded and returned to the client as ``request_id``::

    rid = recent.new_id()
    recent.record(rid, ServedRequest(model=name, output=text, audio=samples, sample_rate=16000))  # transcribe
    recent.record(rid, ServedRequest(model=name, output=line_out, input=line_in))  # each translated line
    app.include_router(feedback_router(FeedbackStore(data_dir), recent, models=names))

A stream's final is recorded the same way with the audio of its segment (``"request_id"`` in the final event).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from transduce.data.feedback import FeedbackStore, clean_text

MAX_TEXT = 10_000  # characters in output, correction or input


@dataclass(frozen=True)
class ServedRequest:
    """What the server answered, kept so that a correction can point at it by id."""

    model: str
    output: str
    input: str | None = None
    """Source text (translation)."""
    audio: np.ndarray | None = None
    """(N,) float32 mono samples in [-1, 1] (speech), kept in memory only."""
    sample_rate: int = 16000


class RecentRequests:
    """The last ``max_requests`` served requests by id, holding at most ``max_audio_seconds`` of audio in all
    (the oldest are forgotten first). Thread-safe."""

    def __init__(self, max_requests: int = 1024, max_audio_seconds: float = 1800.0) -> None:
        self.max_requests, self.max_audio_seconds = max_requests, max_audio_seconds
        self._items: OrderedDict[str, ServedRequest] = OrderedDict()
        self._audio_seconds = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @staticmethod
    def _seconds(req: ServedRequest) -> float:
        return 0.0 if req.audio is None else len(req.audio) / req.sample_rate

    def record(self, request_id: str, request: ServedRequest) -> None:
        with self._lock:
            if (old := self._items.pop(request_id, None)) is not None:
                self._audio_seconds -= self._seconds(old)
            self._items[request_id] = request
            self._audio_seconds += self._seconds(request)
            while self._items and (len(self._items) > self.max_requests
                                   or self._audio_seconds > self.max_audio_seconds):
                self._audio_seconds -= self._seconds(self._items.popitem(last=False)[1])

    def get(self, request_id: str) -> ServedRequest | None:
        with self._lock:
            return self._items.get(request_id)

    def __len__(self) -> int:
        return len(self._items)


class FeedbackBody(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    output: str = Field(max_length=MAX_TEXT)
    correction: str = Field(max_length=MAX_TEXT)
    input: str | None = Field(default=None, max_length=MAX_TEXT)
    request_id: str | None = Field(default=None, max_length=200)
    keep_audio: bool = False


class FeedbackError(ValueError):
    """A correction refused, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bad(status: int, message: str) -> FeedbackError:
    return FeedbackError(status, message)


def parse_body(raw: bytes) -> FeedbackBody:
    """The request body -> ``FeedbackBody``; a 422 ``FeedbackError`` naming the first bad field."""
    try:
        return FeedbackBody.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise _bad(422, f"{where}: {first['msg']}" if first["loc"] else f"body: {first['msg']}") from None


def store_feedback(body: FeedbackBody, store: FeedbackStore, recent: RecentRequests,
                   models: Collection[str]) -> int:
    """Check ``body`` against the loaded models and the recent requests, store it; the correction's id."""
    if models and body.model not in models:
        raise _bad(404, f"model {body.model!r} is not loaded (loaded: {', '.join(models)})")
    if not clean_text(body.correction):
        raise _bad(400, "correction is empty")
    served = None
    if body.request_id is not None:
        served = recent.get(body.request_id)
        if served is None:
            raise _bad(404, f"request_id {body.request_id!r} is unknown or forgotten (the server keeps the last "
                            f"{recent.max_requests} requests)")
        if served.model != body.model:
            raise _bad(400, f"request_id {body.request_id!r} was served by {served.model!r}, not {body.model!r}")
    elif body.input is None:
        raise _bad(400, "give the request_id of a served result, or the input text it came from")
    audio, duration = None, None
    if body.keep_audio:
        if served is None or served.audio is None:
            raise _bad(400, "keep_audio needs the request_id of a speech request (its audio is what is kept)")
        audio, duration = store.save_audio(served.audio, served.sample_rate)
    text_input = body.input if body.input is not None else (served.input if served is not None else None)
    return store.add(model=body.model, output=body.output, correction=body.correction, input=text_input,
                     request_id=body.request_id, audio=audio, duration=duration)


def feedback_router(store: FeedbackStore, recent: RecentRequests, models: Collection[str] = ()) -> APIRouter:
    """``POST /v1/feedback`` over ``store``; ``recent``: the app's record of served requests; ``models``: the
    loaded model names (empty = any name)."""
    router = APIRouter()

    def save(raw: bytes) -> JSONResponse:
        try:
            return JSONResponse({"id": store_feedback(parse_body(raw), store, recent, tuple(models))})
        except FeedbackError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)

    @router.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        raw = await request.body()
        return await run_in_threadpool(save, raw)  # SQLite and WAV writes off the event loop

    return router
