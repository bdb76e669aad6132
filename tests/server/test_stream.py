"""``WS /v1/stream`` on the bundled streaming model: events equal the library's stream run alone, concurrent
streams share encoder rounds (one encoder call per round, not one per stream), WAV headers are skipped or
refused, a client that leaves frees its state at once, shutdown drains open streams (in-process and a real
uvicorn under SIGTERM), and a failing round fails only its streams."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from transduce.server.app import Served, create_app
from transduce.streaming.endpoint import EndpointConfig
from transduce.streaming.stream import feed

ROOT = Path(__file__).resolve().parents[2]
ASR = ROOT / "models" / "digits-hybrid-streaming"
WAVS = sorted((ROOT / "examples" / "digits").glob("*.wav"))
CHUNK_MS = 320.0
END = json.dumps({"type": "end"})


@pytest.fixture(scope="module")
def served() -> Served:
    return Served.load([ASR], chunk_ms=CHUNK_MS, endpoint_silence=0.8)


@pytest.fixture
def client(served: Served):
    with TestClient(create_app(served)) as c:
        yield c


def pcm(path: Path, seconds_of_silence: float = 0.0) -> bytes:
    wave, rate = sf.read(path, dtype="int16")
    silence = np.zeros(int(rate * seconds_of_silence), dtype=np.int16)
    return np.concatenate([wave, silence, wave]).tobytes() if seconds_of_silence else wave.tobytes()


def events_until_close(ws) -> tuple[list[dict], dict]:
    events = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return events, message
        events.append(json.loads(message["text"]))


def reference(served: Served, data: bytes) -> list[tuple[str, float, float]]:
    """The finals of the library's stream fed alone (the same chunking and endpoint rules as the server)."""
    recognizer = served.models["digits-hybrid-streaming"].engine
    wave = torch.from_numpy(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)
    stream = recognizer.stream(CHUNK_MS, endpoint=EndpointConfig(trailing_silence=0.8))
    return [(s.text, s.start, s.end) for s in feed(stream, wave, 100.0)]


def test_a_stream_gives_the_library_result(client, served: Served) -> None:
    data = pcm(WAVS[1], seconds_of_silence=1.5)  # two utterances: an endpoint in between
    with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
        for start in range(0, len(data), 3001):  # odd packet sizes: samples split across frames
            ws.send_bytes(data[start : start + 3001])
        ws.send_text(END)
        events, close = events_until_close(ws)
    finals = [(e["text"], e["start"], e["end"]) for e in events if e["type"] == "final"]
    assert finals == reference(served, data) and len(finals) == 2
    assert close["code"] == 1000
    assert events[-1]["type"] == "final" and all(e["request_id"] for e in events if e["type"] == "final")
    partials = [e["text"] for e in events if e["type"] == "partial"]
    assert partials and all(a != b for a, b in zip(partials, partials[1:], strict=False))  # sent only when it changes


def test_concurrent_streams_share_encoder_rounds(client, served: Served, monkeypatch) -> None:
    encoder = served.models["digits-hybrid-streaming"].engine.model.encoder
    calls: list[int] = []  # streams per encoder computation (a forward_chunks call with chunks to compute)
    original = encoder._advance

    def spy(buffered, states, sizes, *args):
        calls.append(len(sizes))
        return original(buffered, states, sizes, *args)

    monkeypatch.setattr(encoder, "_advance", spy)
    n, data = 4, [pcm(w) for w in WAVS[:4]]
    expected, alone = [], []
    for audio in data:  # each stream alone: one computation per chunk
        expected.append(reference(served, audio))
        alone.append(len(calls))
        calls.clear()
    sockets = [client.websocket_connect("/v1/stream").__enter__() for _ in range(n)]
    for ws, audio in zip(sockets, data, strict=True):
        ws.send_bytes(audio)
        ws.send_text(END)
    results = [events_until_close(ws)[0] for ws in sockets]
    for ws in sockets:
        ws.__exit__(None, None, None)
    assert [[(e["text"], e["start"], e["end"]) for e in r if e["type"] == "final"] for r in results] == expected
    assert sum(calls) == sum(alone)  # the same chunks computed ...
    assert len(calls) <= max(alone) + 2 < sum(alone) / 2  # ... in shared rounds, not one call per stream and chunk
    assert max(calls) == n  # a round holds every stream


def test_a_wav_header_is_skipped(client, served: Served) -> None:
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(WAVS[2].read_bytes())  # the whole file, header included
        ws.send_text(END)
        events, _ = events_until_close(ws)
    assert [(e["text"], e["start"], e["end"]) for e in events if e["type"] == "final"] == reference(served,
                                                                                                   pcm(WAVS[2]))


def test_a_wav_header_of_another_format_is_refused(client, tmp_path) -> None:
    wave, rate = sf.read(WAVS[0], dtype="float32")
    other = tmp_path / "8k.wav"
    sf.write(other, wave[::2], 8000, subtype="PCM_16")
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(other.read_bytes())
        events, close = events_until_close(ws)
    assert events == [{"type": "error", "message": "the WAV header describes PCM 16-bit, 1 channel(s) at 8000 Hz; "
                                                   "this stream takes 16-bit mono PCM at 16000 Hz"}]
    assert close["code"] == 1003


def test_a_client_that_leaves_frees_its_state_at_once(client, served: Served) -> None:
    hub = served.models["digits-hybrid-streaming"].hub
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(pcm(WAVS[3])[:16000])
        deadline = time.monotonic() + 5
        while not hub.batch.sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(hub.batch.sessions) == 1 and served.active_streams == 1
    deadline = time.monotonic() + 5
    while (hub.batch.sessions or hub.streams or served.active_streams) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not hub.batch.sessions and not hub.streams and served.active_streams == 0


def test_shutdown_drains_open_streams(client, served: Served) -> None:
    data = pcm(WAVS[4])
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(data)  # no "end": the server ends it
        hub = served.models["digits-hybrid-streaming"].hub
        deadline, seconds = time.monotonic() + 10, len(data) / 2 / 16000
        while sum(s.stats.audio_seconds for s in hub.batch.sessions.values()) < seconds - 1e-6:
            assert time.monotonic() < deadline, "the server did not receive the audio"
            time.sleep(0.01)
        client.portal.call(served.drain, 10.0)
        events, close = events_until_close(ws)
        with client.websocket_connect("/v1/stream") as late:
            assert late.receive() == {"type": "websocket.close", "code": 1013,
                                      "reason": "server shutting down; try again later"}
    assert [(e["text"], e["start"], e["end"]) for e in events if e["type"] == "final"] == reference(served, data)
    assert close["code"] == 1000


def test_a_failing_round_fails_only_its_streams(client, served: Served, monkeypatch) -> None:
    model = served.models["digits-hybrid-streaming"].engine.model
    original = model.forward_chunks
    broken = {"once": True}

    def flaky(feats, states, **kwargs):
        if broken.pop("once", False):
            raise RuntimeError("device lost")
        return original(feats, states, **kwargs)

    monkeypatch.setattr(model, "forward_chunks", flaky)
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(pcm(WAVS[5]))
        events, close = events_until_close(ws)
    assert events == [{"type": "error", "message": "recognition failed: device lost"}]
    with client.websocket_connect("/v1/stream") as ws:  # the next stream is served as usual
        ws.send_bytes(pcm(WAVS[5]))
        ws.send_text(END)
        events, close = events_until_close(ws)
    assert [e["text"] for e in events if e["type"] == "final"] == [t for t, _, _ in reference(served, pcm(WAVS[5]))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_streams_of_a_real_server(served: Served) -> None:
    import websockets

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "transduce", "serve", "--model", str(ASR), "--port", str(port),
                             "--chunk-ms", str(CHUNK_MS)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    data = pcm(WAVS[1])

    async def client() -> list[dict]:
        deadline = time.monotonic() + 60
        while True:
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/stream?sample_rate=16000")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
                await asyncio.sleep(0.2)
        async with ws:
            await ws.send(data)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)  # mid-stream, no "end" sent
            return [json.loads(m) async for m in ws]

    try:
        events = asyncio.run(asyncio.wait_for(client(), 90))
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert [(e["text"], e["start"], e["end"]) for e in events if e["type"] == "final"] == reference(served, data)
