"""``POST /v1/feedback``: corrections stored in SQLite, audio kept only when asked, clear refusals."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient

from transduce.data.feedback import FeedbackStore, read_corrections
from transduce.server.feedback import RecentRequests, ServedRequest, feedback_router

SPEECH, TEXT = "digits-hybrid-streaming", "multi30k-en-de"


@pytest.fixture
def served(tmp_path: Path) -> tuple[TestClient, RecentRequests, Path]:
    recent = RecentRequests(max_requests=4, max_audio_seconds=3.0)
    app = FastAPI()
    app.include_router(feedback_router(FeedbackStore(tmp_path), recent, models=[SPEECH, TEXT]))
    return TestClient(app), recent, tmp_path


def _wave(seconds: float, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.2).astype(np.float32)


def test_a_translation_correction_is_stored(served) -> None:
    client, _, data = served
    r = client.post("/v1/feedback", json={"model": TEXT, "input": "A dog.", "output": "Eine Katze.",
                                          "correction": "Ein Hund."})
    assert r.status_code == 200, r.text
    [row] = read_corrections(data / "feedback.sqlite")
    assert (row.id, row.model, row.input, row.output, row.correction, row.audio) == (
        r.json()["id"], TEXT, "A dog.", "Eine Katze.", "Ein Hund.", None)


def test_audio_is_written_only_when_the_client_asks(served) -> None:
    client, recent, data = served
    wave = _wave(1.0)
    recent.record("s1", ServedRequest(model=SPEECH, output="one two", audio=wave))
    recent.record("t1", ServedRequest(model=TEXT, output="Hallo", input="Hello"))
    body = {"model": SPEECH, "request_id": "s1", "output": "one two", "correction": "one three"}
    assert client.post("/v1/feedback", json=body).status_code == 200
    assert not (data / "audio").exists()  # no keep_audio: nothing but the row
    assert client.post("/v1/feedback", json=body | {"keep_audio": True}).status_code == 200
    assert client.post("/v1/feedback", json={"model": TEXT, "request_id": "t1", "output": "Hallo",
                                             "correction": "Guten Tag"}).status_code == 200
    rows = read_corrections(data / "feedback.sqlite")
    assert [r.audio is not None for r in rows] == [False, True, False]
    assert rows[2].input == "Hello"  # taken from the served request
    kept, rate = sf.read(data / rows[1].audio, dtype="float32")
    assert rate == 16000 and rows[1].duration == 1.0
    np.testing.assert_allclose(kept, wave, atol=1 / 32767)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"model": "nope", "input": "x"}, 404, "model 'nope' is not loaded"),
    ({"model": SPEECH, "request_id": "gone"}, 404, "request_id 'gone' is unknown or forgotten"),
    ({"model": TEXT, "request_id": "s1"}, 400, "was served by 'digits-hybrid-streaming'"),
    ({"model": TEXT, "request_id": "t1", "keep_audio": True}, 400, "keep_audio needs the request_id of a speech"),
    ({"model": TEXT, "input": "x", "keep_audio": True}, 400, "keep_audio needs"),
    ({"model": TEXT}, 400, "give the request_id of a served result, or the input text"),
    ({"model": TEXT, "input": "x", "correction": "   "}, 400, "correction is empty"),
])
def test_bad_feedback_is_refused_with_one_line(served, body: dict, status: int, says: str) -> None:
    client, recent, data = served
    recent.record("s1", ServedRequest(model=SPEECH, output="one", audio=_wave(0.5)))
    recent.record("t1", ServedRequest(model=TEXT, output="Hallo", input="Hello"))
    r = client.post("/v1/feedback", json={"output": "o", "correction": "c"} | body)
    assert r.status_code == status and says in r.json()["error"] and "\n" not in r.json()["error"]
    assert read_corrections(data / "feedback.sqlite") == [] and not (data / "audio").exists()


def test_oversized_and_malformed_bodies_are_refused(served) -> None:
    client, _, data = served
    for body, says in [({"model": TEXT, "input": "x", "output": "o", "correction": "c" * 10_001}, "correction: "),
                       ({"model": TEXT, "input": "x"}, "output: Field required"),
                       ({"model": 3, "input": "x", "output": "o", "correction": "c"}, "model: "),
                       (b"not json", "body: Invalid JSON"), (b"[1]", "body: ")]:
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = client.post("/v1/feedback", **kw)
        assert r.status_code == 422 and r.json()["error"].startswith(says) and "\n" not in r.json()["error"], r.text
    assert read_corrections(data / "feedback.sqlite") == []


def test_recent_requests_forget_the_oldest_by_count_and_audio_seconds() -> None:
    recent = RecentRequests(max_requests=3, max_audio_seconds=2.5)
    for i in range(4):
        recent.record(f"t{i}", ServedRequest(model=TEXT, output=str(i), input="x"))
    assert recent.get("t0") is None and [recent.get(f"t{i}").output for i in (1, 2, 3)] == ["1", "2", "3"]
    recent.record("a", ServedRequest(model=SPEECH, output="a", audio=_wave(1.0)))
    recent.record("b", ServedRequest(model=SPEECH, output="b", audio=_wave(1.0)))
    recent.record("c", ServedRequest(model=SPEECH, output="c", audio=_wave(1.0)))  # 3 s > 2.5 s: "a" goes
    assert recent.get("a") is None and recent.get("b") is not None and recent.get("c") is not None
    recent.record("b", ServedRequest(model=SPEECH, output="b2", audio=_wave(0.1)))  # replaced, not counted twice
    assert len(recent) == 2 and recent.get("b").output == "b2"


def test_concurrent_corrections_are_all_stored(served) -> None:
    client, recent, data = served
    errors: list[str] = []

    def post(i: int) -> None:
        r = client.post("/v1/feedback", json={"model": TEXT, "input": f"s{i}", "output": "o", "correction": f"c{i}"})
        if r.status_code != 200:
            errors.append(r.text)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = read_corrections(data / "feedback.sqlite")
    assert errors == [] and sorted(r.correction for r in rows) == sorted(f"c{i}" for i in range(16))
    assert len({r.id for r in rows}) == 16


def test_a_served_transcript_is_corrected_by_its_request_id(tmp_path: Path) -> None:
    from testkit import ROOT

    from transduce.server.app import Served, create_app

    wav = ROOT / "examples" / "digits" / "dev-000002.wav"
    served = Served.load([ROOT / "models" / "digits-hybrid-streaming"], data_dir=tmp_path)
    with TestClient(create_app(served)) as client:
        out = client.post("/v1/transcribe", content=wav.read_bytes(), headers={"content-type": "audio/wav"}).json()
        r = client.post("/v1/feedback", json={"model": "digits-hybrid-streaming", "request_id": out["request_id"],
                                              "output": out["text"], "correction": "one one five", "keep_audio": True})
        assert r.status_code == 200, r.text
    [row] = read_corrections(tmp_path / "feedback.sqlite")
    assert (row.request_id, row.output, row.correction) == (out["request_id"], out["text"], "one one five")
    kept, rate = sf.read(tmp_path / row.audio, dtype="float32")
    sent, sent_rate = sf.read(wav, dtype="float32")
    assert rate == sent_rate == 16000
    np.testing.assert_allclose(kept, sent, atol=1 / 32767)  # the very audio that was transcribed
