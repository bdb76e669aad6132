"""The web page in a real headless Chromium: the text box translates, the microphone (Chromium's fake device
playing a spoken-digits WAV) streams to the server and the page shows the transcript live, an uploaded file is
transcribed, and a correction reaches the feedback store. References are computed inside the test: the library's
Translator and the server's own /v1/transcribe of the same recording.

``TRANSDUCE_SCREENSHOT=docs/img/serve-page.png`` also saves a screenshot of the page at the end."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from cdp import Browser, find_chromium
from testkit import ROOT

from transduce.data.feedback import read_corrections
from transduce.server.app import Served, create_app

DIGITS = ROOT / "models" / "digits-hybrid-streaming"
EN_DE = ROOT / "models" / "multi30k-en-de"
EXAMPLES = ROOT / "examples" / "digits"
SENTENCE = "A little girl is playing with a dog in the park."

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="needs a chromium browser (Debian package "
                                                                    "chromium: make system-deps installs it)")


def test_the_page_and_its_files_are_served_and_nothing_else() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from transduce.server.page import STATIC, page_router

    app = FastAPI()
    app.include_router(page_router())
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    files = [("app.js", "text/javascript"), ("pcm-worklet.js", "text/javascript"), ("style.css", "text/css")]
    for name, media in files:
        assert f"/static/{name}" in page.text + (STATIC / "app.js").read_text()  # each is used
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        assert r.content == (STATIC / name).read_bytes()
    for path in ("/static/index.html", "/static/../page.py", "/static/%2e%2e/page.py", "/static/"):
        assert client.get(path).status_code == 404


class Server:
    """The app under uvicorn on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, served: Served) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning", ws="websockets"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Served]]:
    served = Served.load([EN_DE, DIGITS], data_dir=tmp_path_factory.mktemp("served"))
    with Server(served) as running:
        yield running, served


def _transcribe(url: str, wav: Path) -> str:
    request = urllib.request.Request(f"{url}/v1/transcribe", data=wav.read_bytes(), method="POST",
                                     headers={"Content-Type": "audio/wav"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)["text"]


def _recording(url: str, folder: Path) -> tuple[Path, str, float]:
    """A bundled example the server transcribes right (its text is the reference), padded with 0.5 s of
    silence before and 1.5 s after, as the WAV the fake microphone plays; (file, transcript, seconds)."""
    truth = dict(line.split("\t") for line in (EXAMPLES / "transcripts.tsv").read_text().splitlines())
    for name, text in sorted(truth.items()):
        if _transcribe(url, EXAMPLES / name) == text:
            wave, rate = sf.read(EXAMPLES / name, dtype="float32")
            padded = np.concatenate([np.zeros(rate // 2, np.float32), wave, np.zeros(rate * 3 // 2, np.float32)])
            sf.write(folder / "mic.wav", padded, rate, subtype="PCM_16")
            return folder / "mic.wav", text, len(padded) / rate
    raise AssertionError("the served model gets none of the bundled examples right")


@needs_chromium
def test_the_page_translates_streams_the_microphone_transcribes_and_takes_corrections(server, tmp_path) -> None:
    running, served = server
    started = time.monotonic()
    wav, expected, seconds = _recording(running.url, tmp_path)
    reference = served.models["multi30k-en-de"].engine.translate([SENTENCE])[0]
    flags = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required")
    with Browser(running.url + "/", flags=flags) as page:
        page.wait_for("document.querySelectorAll('#speech-model option').length > 0", 15, "the models listed")
        assert page.evaluate("document.querySelector('#translate-model').value") == "multi30k-en-de"

        page.evaluate(f"document.querySelector('#source').value = {json.dumps(SENTENCE)}")
        page.evaluate("document.querySelector('#translate-btn').click()")
        shown = page.wait_for("document.querySelector('#translations li .text')?.textContent", 20, "a translation")
        assert shown == reference

        page.evaluate("window.partials = []; new MutationObserver(() => { const t = document.querySelector("
                      "'#partial').textContent; if (t) partials.push([performance.now(), t]); }).observe("
                      "document.querySelector('#partial'), {childList: true, characterData: true, subtree: true})")
        page.evaluate("document.querySelector('#mic-btn').click()")
        page.wait_for(f"(/listening… ([0-9.]+) s/.exec(document.querySelector('#mic-status').textContent) || [0, 0])[1]"
                      f" >= {seconds + 0.3}", seconds + 15, "the recording streamed")
        stopped = page.evaluate("performance.now()")
        page.evaluate("document.querySelector('#mic-btn').click()")  # stop: the last final, then the close
        page.wait_for("document.querySelector('#mic-status').textContent === 'done'", 15, "the stream closed")
        finals = page.evaluate("[...document.querySelectorAll('#finals li .text')].map(e => e.textContent)")
        assert " ".join(finals) == expected
        partials = page.evaluate("partials")  # shown live, while the microphone was still on
        assert partials and partials[0][0] < stopped and expected.startswith(partials[0][1].split()[0]), partials

        page.set_files("#upload", EXAMPLES / "dev-000001.wav")
        upload = page.wait_for("document.querySelector('#uploads li .text')?.textContent", 20, "the upload")
        assert upload == _transcribe(running.url, EXAMPLES / "dev-000001.wav")

        page.evaluate("document.querySelector('#finals li .fix').click()")
        page.evaluate("document.querySelector('#finals li input.correction').value = 'one two three'")
        page.evaluate("document.querySelector('#finals li button[type=submit]').click()")
        page.wait_for("document.querySelector('#finals li .sent')?.textContent", 10, "the correction saved")
        if target := os.environ.get("TRANSDUCE_SCREENSHOT"):
            page.screenshot(Path(target))
    [row] = read_corrections(served.data_dir / "feedback.sqlite")
    assert (row.model, row.output, row.correction) == ("digits-hybrid-streaming", finals[0], "one two three")
    kept, rate = sf.read(served.data_dir / row.audio, dtype="float32")  # "keep audio" is ticked by default
    assert rate == 16000 and abs(len(kept) / rate - seconds) < 1.0
    assert time.monotonic() - started < 60
