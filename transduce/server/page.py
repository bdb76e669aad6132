"""The web page at ``/``: plain HTML, CSS and JavaScript from ``static/``, no build step.

A text box that translates (``POST /v1/translate``), a microphone button that streams from the browser
(getUserMedia + an AudioWorklet that resamples to 16 kHz 16-bit PCM, sent over ``WS /v1/stream``; partials and
finals shown live), an upload box (``POST /v1/transcribe``), and on every result a way to correct it
(``POST /v1/feedback``). Browsers give the microphone only to secure origins: ``http://127.0.0.1`` and
``http://localhost`` count as secure, another host needs HTTPS (a reverse proxy in front of ``transduce serve``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
FILES = {  # the only files served: no path from the request ever reaches the file system
    "app.js": "text/javascript",
    "pcm-worklet.js": "text/javascript",
    "style.css": "text/css",
}
NO_CACHE = {"Cache-Control": "no-cache"}  # a restarted server's new page is picked up at once


def page_router() -> APIRouter:
    """``GET /`` (the page) and ``GET /static/{app.js, pcm-worklet.js, style.css}``."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)

    for name, media_type in FILES.items():
        router.add_api_route(f"/static/{name}", _serve(STATIC / name, media_type), methods=["GET"],
                             include_in_schema=False)
    return router


def _serve(path: Path, media_type: str) -> Callable[[], FileResponse]:
    def static_file() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers=NO_CACHE)

    return static_file
