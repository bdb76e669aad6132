"""Every limit of ``transduce serve`` refuses cleanly, one line: body size (413, declared or streamed), audio
seconds, text lines and line length, max streams (close 1013), idle streams (close 1001), the sample rate, and a
client sending faster than real time is throttled with its buffered audio bounded (and still gets the right
result)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from transduce.server.app import Served, create_app
from transduce.server.limits import LimitError, PcmReader, ServeLimits
from transduce.streaming.endpoint import EndpointConfig
from transduce.streaming.stream import feed

ROOT = Path(__file__).resolve().parents[2]
MT, ASR = ROOT / "models" / "multi30k-en-de", ROOT / "models" / "digits-hybrid-streaming"
WAVS = sorted((ROOT / "examples" / "digits").glob("*.wav"))
END = json.dumps({"type": "end"})


@pytest.fixture(scope="module")
def served() -> Served:
    return Served.load([MT, ASR], chunk_ms=320.0)


@pytest.fixture
def client(served: Served):
    with TestClient(create_app(served)) as c:
        yield c


def test_body_size_413_declared_or_streamed(client, served: Served, monkeypatch) -> None:
    monkeypatch.setattr(served.limits, "max_body_bytes", 1000)
    r = client.post("/v1/transcribe", content=b"\0" * 1001)
    assert r.status_code == 413 and r.json() == {"error": "request body: 1001 bytes; at most 1000"}

    def chunks():  # no Content-Length: counted while read
        for _ in range(5):
            yield b"\0" * 400

    r = client.post("/v1/transcribe", content=chunks())
    assert r.status_code == 413 and r.json() == {"error": "request body: more than 1000 bytes"}
    assert client.post("/v1/translate", json={"text": ["x" * 990]}).status_code == 413


def test_audio_seconds_413(client, served: Served, monkeypatch) -> None:
    seconds = sf.info(WAVS[0]).duration
    monkeypatch.setattr(served.limits, "max_audio_seconds", 1.5)
    r = client.post("/v1/transcribe", content=WAVS[0].read_bytes())
    assert r.status_code == 413 and r.json() == {"error": f"audio: {seconds:.1f} s; at most 1.5 s per request"}


def test_text_lines_and_line_length(client, served: Served, monkeypatch) -> None:
    monkeypatch.setattr(served.limits, "max_lines", 3)
    monkeypatch.setattr(served.limits, "max_line_chars", 20)
    cases = [
        ({"text": ["a"] * 4}, 413, "text: 4 lines; at most 3 per request"),
        ({"text": ["A dog.", "x" * 21]}, 413, "text[1]: 21 characters; at most 20 per line"),
        ({"text": [1]}, 400, "text: expected a string or a list of strings"),
        ({"text": ["a\nb"]}, 400, "text[0]: a line break inside a line; send each line as its own string"),
        ({"text": ["a"], "beam": 0}, 400, "beam: expected a whole number from 1 to 16, got 0"),
        ({"text": ["a"], "nbest": "2"}, 400, "nbest: expected a whole number from 1 to 16, got '2'"),
        ({"text": ["a"], "lang": "fr"}, 400, "unknown field(s): lang (known: text, beam, nbest, model)"),
    ]
    for body, status, message in cases:
        r = client.post("/v1/translate", json=body)
        assert (r.status_code, r.json()) == (status, {"error": message}), body
    r = client.post("/v1/translate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("request body: not JSON")
    assert client.post("/v1/translate", json={"text": "A dog."}).json()["translations"] == ["Ein Hund."]


def test_max_streams_refuses_with_1013(client, served: Served, monkeypatch) -> None:
    monkeypatch.setattr(served.limits, "max_streams", 2)
    with client.websocket_connect("/v1/stream") as a, client.websocket_connect("/v1/stream") as b:
        a.send_bytes(b"\0\0" * 1600)
        b.send_bytes(b"\0\0" * 1600)
        with client.websocket_connect("/v1/stream") as c:
            assert c.receive() == {"type": "websocket.close", "code": 1013,
                                   "reason": "server full: 2 streams open; try again later"}
        for ws in (a, b):  # end both streams and read them to their close: leaving mid-decode cancels the server's
            ws.send_text(END)  # task, which the test client raises as CancelledError on a loaded machine
            while ws.receive()["type"] != "websocket.close":
                pass
    deadline = time.monotonic() + 5
    while served.active_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    with client.websocket_connect("/v1/stream") as d:  # room again once they closed
        d.send_text(END)
        assert d.receive()["type"] == "websocket.close"


def test_an_idle_stream_is_closed(client, served: Served, monkeypatch) -> None:
    monkeypatch.setattr(served.limits, "idle_seconds", 0.3)
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(b"\0\0" * 800)
        assert ws.receive_json() == {"type": "error", "message": "idle: nothing received for 0.3 s"}
        assert ws.receive() == {"type": "websocket.close", "code": 1001, "reason": "idle timeout"}


def test_refused_before_the_handshake(client, served: Served, monkeypatch) -> None:
    for url, status, message in [
        ("/v1/stream?sample_rate=8000", 400, "sample_rate=8000: model digits-hybrid-streaming takes 16000 Hz 16-bit "
                                             "mono PCM; resample on the client"),
        ("/v1/stream?model=multi30k-en-de", 404, "model 'multi30k-en-de': no such speech model here (served: "
                                                 "digits-hybrid-streaming)"),
    ]:
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(url):
            pass
        assert refused.value.status_code == status and refused.value.json() == {"error": message}
    monkeypatch.setattr(served.limits, "api_key", "k")
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/v1/stream"):
        pass
    assert refused.value.status_code == 401
    with client.websocket_connect("/v1/stream?api_key=k") as ws:
        ws.send_text(END)
        assert ws.receive()["type"] == "websocket.close"


def test_a_client_faster_than_real_time_is_throttled(client, served: Served, monkeypatch) -> None:
    hub = served.models["digits-hybrid-streaming"].hub
    monkeypatch.setattr(hub, "queue_seconds", 2 * hub.chunk_seconds)  # the smallest bound
    batch_feed, most = hub.batch.feed, [0.0]

    def watched(key, pcm):  # buffered audio right after each feed, before the encoder takes it
        batch_feed(key, pcm)
        most[0] = max(most[0], hub.buffered_seconds(key))

    monkeypatch.setattr(hub.batch, "feed", watched)
    wave, rate = sf.read(WAVS[3], dtype="int16")
    long = np.tile(wave, 5)  # 10.6 s sent at once: many times faster than real time
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(long.tobytes())
        ws.send_text(END)
        events = []
        while (message := ws.receive())["type"] != "websocket.close":
            events.append(json.loads(message["text"]))
    assert most[0] <= hub.queue_seconds + hub.chunk_seconds + 0.05  # bounded: never the 10.6 s sent
    recognizer = served.models["digits-hybrid-streaming"].engine  # throttled, not truncated: the library's result
    alone = feed(recognizer.stream(320.0, endpoint=EndpointConfig(trailing_silence=0.8)),
                 torch.from_numpy(long.astype(np.float32) / 32768.0), 100.0)
    assert [(e["text"], e["start"], e["end"]) for e in events if e["type"] == "final"] == [
        (s.text, s.start, s.end) for s in alone]


def test_pcm_reader_carries_odd_bytes_and_refuses_bad_headers() -> None:
    reader = PcmReader(16000)
    samples = np.array([1, -2, 300, -32768], dtype="<i2").tobytes()
    parts = [reader.read(samples[:3]), reader.read(samples[3:7]), reader.read(samples[7:])]
    assert np.concatenate([p.numpy() for p in parts]).tolist() == [v / 32768 for v in (1, -2, 300, -32768)]
    with pytest.raises(LimitError, match="starts with RIFF but is not a WAV"):
        PcmReader(16000).read(b"RIFF\0\0\0\0AVI LIST")
    with pytest.raises(LimitError, match="without its fmt and data chunks"):
        PcmReader(16000).read(b"RIFF\0\0\0\0WAVEfmt ")
    with pytest.raises(ValueError, match="max_streams must be at least 1"):
        ServeLimits(max_streams=0)
