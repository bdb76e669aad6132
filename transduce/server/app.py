"""The HTTP/WebSocket app: ``create_app(served)`` over the loaded models (``Served``).

Routes: GET /health, GET /metrics, POST /v1/translate, POST /v1/transcribe, POST /v1/speech-translate,
WS /v1/stream (``server/streams.py``), plus the feedback API and the web page when their modules are installed
(``server/feedback.py``, ``server/page.py``). Every model is served by its task: translation models by a
``TranslationBatcher``, speech models by a ``StreamHub`` (streams) and a worker thread (files). Requests name
models by folder name only (``model`` field or query parameter; default the first of the kind), never by path.
Refusals are one-line JSON ``{"error": ...}`` with the status of ``server/limits.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from torch import Tensor

from transduce.errors import DataError, UsageError
from transduce.recognize import Recognizer
from transduce.server.feedback import RecentRequests, ServedRequest, feedback_router
from transduce.server.limits import LimitError, ServeLimits, read_body
from transduce.server.metrics import Metrics
from transduce.server.page import page_router
from transduce.server.streams import StreamHub, stream_socket
from transduce.server.translation import TranslationBatcher

log = logging.getLogger("transduce.serve")
ROUTES = ("/health", "/metrics", "/v1/translate", "/v1/transcribe", "/v1/speech-translate", "/v1/stream",
          "/v1/feedback", "/")


@dataclass
class ServedModel:
    """A loaded model and what serves it: a ``TranslationBatcher`` (translation) or a ``StreamHub`` (speech)."""

    name: str
    """The folder name requests pick it by."""
    path: Path
    task: str
    """"translation", "speech" or "speech_translation"."""
    engine: Any
    """The ``Translator``, ``Recognizer`` or ``SpeechTranslator``."""
    batcher: TranslationBatcher | None = None
    hub: StreamHub | None = None

    @property
    def recognizer(self) -> Recognizer:
        assert isinstance(self.engine, Recognizer)
        return self.engine


class Served:
    """The models a server holds, by name, with its limits, metrics, worker threads and the recent results
    (``recent``, by request id, for feedback: bounded in count and in seconds of audio held in memory)."""

    def __init__(self, models: list[ServedModel], *, limits: ServeLimits | None = None,
                 data_dir: str | Path | None = None, metrics: Metrics | None = None) -> None:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise UsageError(f"two served models share a folder name ({', '.join(names)}); names pick models")
        self.models = {m.name: m for m in models}
        self.limits = limits or ServeLimits()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.metrics = metrics or Metrics()
        self.workers: ThreadPoolExecutor | None = None  # /v1/transcribe, one at a time (made by start)
        self.recent = RecentRequests(max_requests=4096, max_audio_seconds=300.0)
        self.active_streams = 0
        self.draining = False
        self.metrics.gauge("transduce_active_streams", lambda: self.active_streams)
        self.metrics.gauge("transduce_translate_queue",
                           lambda: sum(m.batcher.waiting for m in self.models.values() if m.batcher is not None))

    @classmethod
    def load(cls, paths: list[str | Path], *, limits: ServeLimits | None = None, data_dir: str | Path | None = None,
             chunk_ms: float = 640.0, endpoint_silence: float = 0.8, batching: bool = True,
             device: str = "cpu") -> Served:
        """The model folders ``paths``, each served by its task (``transduce.tasks.load``)."""
        from transduce.speech_translate import SpeechTranslator
        from transduce.streaming.endpoint import EndpointConfig
        from transduce.tasks import load
        from transduce.translate import Translator

        limits, metrics = limits or ServeLimits(), Metrics()
        endpoint = EndpointConfig(trailing_silence=endpoint_silence) if endpoint_silence > 0 else None
        models = []
        for path in paths:
            engine, name = load(path, device), Path(path).resolve().name
            if isinstance(engine, Translator):
                models.append(ServedModel(name, Path(path), "translation", engine,
                                          batcher=TranslationBatcher(engine, batched=batching, metrics=metrics)))
            elif isinstance(engine, Recognizer):
                hub = StreamHub(engine, chunk_ms=chunk_ms, endpoint=endpoint, queue_seconds=limits.queue_seconds,
                                metrics=metrics)
                models.append(ServedModel(name, Path(path), "speech", engine, hub=hub))
            elif isinstance(engine, SpeechTranslator):  # files through the worker thread, as /v1/transcribe
                models.append(ServedModel(name, Path(path), "speech_translation", engine))
            else:
                raise UsageError(f"{path}: {type(engine).__name__} models are not served (translation, speech and "
                                 "speech translation are)")
        return cls(models, limits=limits, data_dir=data_dir, metrics=metrics)

    def pick(self, task: str, name: object) -> ServedModel:
        """The model ``name`` (default the first of ``task``); a 404 LimitError for any other name."""
        of_task = [m for m in self.models.values() if m.task == task]
        if name is None or name == "":
            if not of_task:
                raise LimitError(404, f"no {task} model is served here")
            return of_task[0]
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None or model.task != task:
            served = ", ".join(m.name for m in of_task) or "none"
            raise LimitError(404, f"model {str(name)[:100]!r}: no such {task} model here (served: {served})")
        return model

    def record(self, model: str, output: str, *, input: str | None = None, audio: Tensor | None = None,
               sample_rate: int = 16000) -> str:
        """Keep a served result (and its audio, in memory) for feedback -> its request id."""
        request_id = self.recent.new_id()
        samples = None if audio is None else audio.numpy()
        self.recent.record(request_id, ServedRequest(model=model, output=output, input=input, audio=samples,
                                                     sample_rate=sample_rate))
        return request_id

    async def start(self) -> None:
        self.workers, self.draining = ThreadPoolExecutor(1, thread_name_prefix="transcribe"), False
        for model in self.models.values():
            for part in (model.batcher, model.hub):
                if part is not None:
                    part.start()

    async def drain(self, timeout: float = 30.0) -> None:
        """Refuse new streams, end the input of the open ones and wait (up to ``timeout``) until their finals
        were sent and they closed."""
        self.draining = True
        for model in self.models.values():
            if model.hub is not None:
                await model.hub.drain()
        deadline = time.monotonic() + timeout
        while self.active_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        for model in self.models.values():
            for part in (model.batcher, model.hub):
                if part is not None:
                    await part.stop()
        if self.workers is not None:
            self.workers.shutdown(wait=True)


def create_app(served: Served) -> FastAPI:
    """The FastAPI app serving ``served``; its lifespan starts the batchers and stream loops and, at shutdown,
    drains the open streams (their finals are sent) before stopping them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await served.start()
        try:
            yield
        finally:
            await served.drain()
            await served.stop()

    app = FastAPI(title="transduce", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.middleware("http")(_guard)
    app.get("/health")(health)
    app.get("/metrics")(metrics)
    app.post("/v1/translate")(translate)
    app.post("/v1/transcribe")(transcribe)
    app.post("/v1/speech-translate")(speech_translate)
    app.websocket("/v1/stream")(stream_socket)
    _include_feedback_and_page(app, served)
    return app


def _include_feedback_and_page(app: FastAPI, served: Served) -> None:
    """The web page, and the feedback API (``server/feedback.py``) when there is a data folder to store in."""
    from transduce.data.feedback import FeedbackStore

    app.include_router(page_router())
    if served.data_dir is not None:
        store = FeedbackStore(served.data_dir)
        app.include_router(feedback_router(store, served.recent, models=tuple(served.models)))
    else:
        @app.post("/v1/feedback")
        async def feedback_off() -> Response:
            return _error(404, "feedback is off: start transduce serve with --data-dir DIR to store corrections")


async def _guard(request: Request, call_next: Any) -> Response:
    """API key, request counts, errors and latency per route; a LimitError anywhere becomes its status."""
    served: Served = request.app.state.served
    route = request.url.path if request.url.path in ROUTES else "other"
    started = time.perf_counter()
    served.metrics.count("transduce_requests_total", route=route)
    if route != "/health" and not served.limits.authorized(request.headers, request.query_params):
        response: Response = _error(401, "missing or wrong API key (Authorization: Bearer KEY, X-API-Key or ?api_key=)")
    else:
        try:
            response = await call_next(request)
        except LimitError as err:
            response = _error(err.status, str(err))
    if response.status_code >= 400:
        served.metrics.count("transduce_errors_total", route=route, status=str(response.status_code))
    served.metrics.observe("transduce_request_seconds", time.perf_counter() - started, route=route)
    return response


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def health(request: Request) -> dict[str, Any]:
    served: Served = request.app.state.served
    return {"status": "ok", "models": [{"name": m.name, "task": m.task} for m in served.models.values()]}


async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.app.state.served.metrics.render(), media_type="text/plain; version=0.0.4")


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request.stream(), request.headers.get("content-length"), limit)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LimitError(400, f"request body: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise LimitError(400, "request body: expected a JSON object")
    return data


async def translate(request: Request) -> Response:
    """``{"text": [...], "beam"?, "nbest"?, "model"?}`` -> ``{"translations": [...], "model", "request_ids"}``
    (a request id per line, for feedback). With nbest > 1 each translation is a list of ``{"text", "score"}``."""
    served: Served = request.app.state.served
    data = await _json_body(request, served.limits.max_body_bytes)
    unknown = set(data) - {"text", "beam", "nbest", "model"}
    if unknown:
        raise LimitError(400, f"unknown field(s): {', '.join(sorted(unknown))} (known: text, beam, nbest, model)")
    model = served.pick("translation", data.get("model"))
    lines = served.limits.check_lines(data.get("text"))
    assert model.batcher is not None
    beam = served.limits.check_search("beam", data.get("beam"), model.batcher.translator.config.decode.beam)
    nbest = served.limits.check_search("nbest", data.get("nbest"), 1)
    try:
        output = await model.batcher.translate(lines, beam=beam, nbest=nbest)
    except Exception as err:  # noqa: BLE001 - a model error answers this request only
        log.exception("translate failed")
        return _error(500, f"translation failed: {err or type(err).__name__}")
    translations: list[Any] = list(output)
    if nbest > 1:
        translations = [[{"text": t, "score": round(s, 4)} for t, s in row] for row in translations]
    ids = [served.record(model.name, text if nbest == 1 else text[0]["text"], input=line)
           for line, text in zip(lines, translations, strict=True)]
    return JSONResponse({"translations": translations, "model": model.name, "request_ids": ids})


async def transcribe(request: Request) -> Response:
    """The audio file (wav/flac/ogg) as the body, ``?model=`` -> ``{"text", "segments": [{"start", "end",
    "text"}], "model", "request_id"}``. The audio is held in memory (bounded) in case feedback asks to keep it."""
    served: Served = request.app.state.served
    model = served.pick("speech", request.query_params.get("model"))
    result = await _audio_job(request, served, "recognition", lambda body: _transcribe_bytes(served, model, body))
    wave = result.pop("audio")
    rate = model.recognizer.sample_rate
    result["request_id"] = served.record(model.name, result["text"], audio=wave, sample_rate=rate)
    return JSONResponse({**result, "model": model.name})


async def _audio_job(request: Request, served: Served, what: str, work: Callable[[bytes], Any]) -> Any:
    """``work(body)`` on the request's audio file in the model worker thread. An empty body or bad audio is a
    400, a model error a 500 naming ``what`` ("recognition failed: ..."), logged; each answers this request only."""
    body = await read_body(request.stream(), request.headers.get("content-length"), served.limits.max_body_bytes)
    if not body:
        raise LimitError(400, "request body: empty; send the audio file as the body")
    try:
        return await asyncio.get_running_loop().run_in_executor(served.workers, work, body)
    except LimitError:
        raise
    except DataError as err:
        raise LimitError(400, str(err)) from None
    except Exception as err:  # noqa: BLE001 - a model error answers this request only
        log.exception("%s failed", what)
        raise LimitError(500, f"{what} failed: {err or type(err).__name__}") from None


def _read_audio(served: Served, body: bytes, sample_rate: int) -> tuple[Tensor, float]:
    """An audio file's bytes -> its waveform at ``sample_rate`` and its seconds (within the limits); errors name
    "audio", not a path."""
    from transduce.data.audio import audio_duration, load_audio

    with tempfile.NamedTemporaryFile(suffix=".audio") as f:
        f.write(body)
        f.flush()
        try:
            seconds = audio_duration(f.name)
            served.limits.check_audio_seconds(seconds)
            return load_audio(f.name, sample_rate), seconds
        except DataError as err:
            raise DataError(str(err).replace(f.name, "audio")) from None


def _transcribe_bytes(served: Served, model: ServedModel, body: bytes) -> dict[str, Any]:
    """Decode an audio file's bytes and recognize it (in a worker thread)."""
    recognizer = model.recognizer
    wave, seconds = _read_audio(served, body, recognizer.sample_rate)
    [nbest] = recognizer.search([wave])
    best = nbest[0] if nbest else None
    text = best.text.strip() if best else ""
    start = best.times[0] if best and best.times else 0.0
    segments = [{"start": start, "end": round(seconds, 3), "text": text}] if text else []
    return {"text": text, "segments": segments, "audio": wave}


async def speech_translate(request: Request) -> Response:
    """The audio file as the body, ``?model=`` and ``?tgt_lang=`` (default the model's first language) ->
    ``{"text", "tgt_lang", "model"}``, from an end-to-end speech translation model (no feedback for these yet)."""
    served: Served = request.app.state.served
    model = served.pick("speech_translation", request.query_params.get("model"))
    lang = request.query_params.get("tgt_lang") or model.engine.langs[0]
    try:
        model.engine.tag(lang)
    except UsageError as err:
        raise LimitError(400, str(err).replace("--tgt-lang", "tgt_lang")) from None

    def run(body: bytes) -> str:
        wave, _ = _read_audio(served, body, model.engine.sample_rate)
        return model.engine.translate([wave], lang)[0]

    text = await _audio_job(request, served, "speech translation", run)
    return JSONResponse({"text": text, "tgt_lang": lang, "model": model.name})
