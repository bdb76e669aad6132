"""The HTTP API of ``transduce serve`` on the bundled models: results equal the library's and the CLI's, concurrent
translate requests are batched without changing any answer, a model error fails only its own request, unknown
models and missing keys are refused in one line."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from transduce.cli.main import main
from transduce.server.app import Served, create_app
from transduce.server.translation import TranslationBatcher

ROOT = Path(__file__).resolve().parents[2]
MT, ASR = ROOT / "models" / "multi30k-en-de", ROOT / "models" / "digits-hybrid-streaming"
WAVS = sorted((ROOT / "examples" / "digits").glob("*.wav"))
LINES = ["A dog runs through the grass.", "Two men are playing football in a park.", "A woman.",
         "A little girl in a pink dress is climbing stairs.", "People sit on a bench."]


@pytest.fixture(scope="module")
def served() -> Served:
    return Served.load([MT, ASR])


@pytest.fixture
def client(served: Served):
    with TestClient(create_app(served)) as c:
        yield c


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_health_lists_the_models_by_name(client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": [{"name": "multi30k-en-de", "task": "translation"},
                                                    {"name": "digits-hybrid-streaming", "task": "speech"}]}


@pytest.mark.parametrize("beam", [None, 2])
def test_translate_equals_the_translate_command(client, beam) -> None:
    flags = [] if beam is None else ["--beam", str(beam)]
    expected = _cli("translate", "--model", str(MT), *flags, *LINES).splitlines()
    r = client.post("/v1/translate", json={"text": LINES} | ({} if beam is None else {"beam": beam}))
    assert r.status_code == 200, r.text
    assert r.json()["translations"] == expected
    assert len(r.json()["request_ids"]) == len(LINES) and r.json()["model"] == "multi30k-en-de"


def test_nbest_equals_the_translate_command(client) -> None:
    blocks = _cli("translate", "--model", str(MT), "--nbest", "3", *LINES[:2]).strip().split("\n\n")
    expected = [[(float(s), t) for s, t in (line.split("\t") for line in block.splitlines())] for block in blocks]
    rows = client.post("/v1/translate", json={"text": LINES[:2], "nbest": 3}).json()["translations"]
    assert [[(h["score"], h["text"]) for h in row] for row in rows] == [
        [(round(s, 4), t) for s, t in row] for row in expected]


def test_concurrent_requests_are_batched_and_answered_as_alone(served: Served) -> None:
    translator = served.models["multi30k-en-de"].engine
    alone = [translator.translate([line]) for line in LINES]

    async def run() -> tuple[list, int]:
        batcher = TranslationBatcher(translator, max_delay=0.05)
        batcher.start()
        try:
            found = await asyncio.gather(*(batcher.translate([line]) for line in LINES))
        finally:
            await batcher.stop()
        return found, batcher.searches

    found, searches = asyncio.run(run())
    assert found == alone
    assert searches == 1  # five requests, one search


def test_token_budget_splits_batches(served: Served) -> None:
    translator = served.models["multi30k-en-de"].engine

    async def run() -> int:
        batcher = TranslationBatcher(translator, max_delay=0.05, max_tokens=12)  # about one sentence per batch
        batcher.start()
        try:
            await asyncio.gather(*(batcher.translate([line]) for line in LINES))
        finally:
            await batcher.stop()
        return batcher.searches

    assert asyncio.run(run()) >= 3


def test_a_model_error_fails_only_its_request(client, served: Served, monkeypatch) -> None:
    translator = served.models["multi30k-en-de"].engine
    search = translator.search

    def fragile(sentences, **overrides):
        if any("boom" in s for s in sentences):
            raise RuntimeError("the model broke on this input")
        return search(sentences, **overrides)

    monkeypatch.setattr(translator, "search", fragile)
    monkeypatch.setattr(served.models["multi30k-en-de"].batcher, "max_delay", 0.1)  # all three share a batch
    results: dict[str, object] = {}

    def post(text: str) -> None:
        results[text] = client.post("/v1/translate", json={"text": [text]})

    threads = [threading.Thread(target=post, args=(t,)) for t in ("A dog.", "boom", "A cat.")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["boom"].status_code == 500
    assert results["boom"].json() == {"error": "translation failed: the model broke on this input"}
    assert [results[t].json()["translations"] for t in ("A dog.", "A cat.")] == [search_one(search, translator, t)
                                                                                  for t in ("A dog.", "A cat.")]
    assert client.get("/health").status_code == 200


def search_one(search, translator, text: str) -> list[str]:
    return translator.tokenizers.tgt.decode([search([text])[0][0].tokens])


def test_unknown_models_are_404_and_never_paths(client) -> None:
    for name in ("nope", str(MT), "../models/multi30k-en-de", "digits-hybrid-streaming"):
        r = client.post("/v1/translate", json={"text": ["A dog."], "model": name})
        assert r.status_code == 404, name
        assert "\n" not in r.json()["error"] and "no such translation model here" in r.json()["error"]
    assert client.post("/v1/transcribe?model=multi30k-en-de", content=WAVS[0].read_bytes()).status_code == 404


def test_transcribe_equals_the_recognizer(client, served: Served, tmp_path) -> None:
    recognizer = served.models["digits-hybrid-streaming"].engine
    expected = recognizer.search([str(w) for w in WAVS[:2]])
    wave, rate = sf.read(WAVS[1], dtype="float32")
    flac = tmp_path / "a.flac"
    sf.write(flac, wave, rate, format="FLAC")
    for path, [best, *_] in [(WAVS[0], expected[0]), (WAVS[1], expected[1]), (flac, expected[1])]:
        r = client.post("/v1/transcribe", content=path.read_bytes())
        assert r.status_code == 200, r.text
        assert r.json()["text"] == best.text
        assert r.json()["segments"] == [{"start": best.times[0], "end": round(sf.info(path).duration, 3),
                                         "text": best.text}]


def test_a_recognition_error_is_one_line_500_and_the_next_request_works(client, served: Served, monkeypatch) -> None:
    recognizer = served.models["digits-hybrid-streaming"].engine
    expected = client.post("/v1/transcribe", content=WAVS[0].read_bytes()).json()["text"]

    def broken(waves):
        raise RuntimeError("the model broke on this input")

    monkeypatch.setattr(recognizer, "search", broken)
    r = client.post("/v1/transcribe", content=WAVS[0].read_bytes())
    assert r.status_code == 500
    assert r.json() == {"error": "recognition failed: the model broke on this input"}
    monkeypatch.undo()
    assert client.post("/v1/transcribe", content=WAVS[0].read_bytes()).json()["text"] == expected


def test_bad_audio_is_one_line_400(client) -> None:
    for body in (b"not audio at all", b"RIFF\x00\x00"):
        r = client.post("/v1/transcribe", content=body)
        assert r.status_code == 400
        message = r.json()["error"]
        assert message.startswith("audio: ") and "\n" not in message and "/tmp" not in message


def test_api_key_guards_every_route_but_health(served: Served, monkeypatch) -> None:
    monkeypatch.setattr(served.limits, "api_key", "s3cret")
    with TestClient(create_app(served)) as c:
        assert c.get("/health").status_code == 200
        for method, path in [("get", "/metrics"), ("post", "/v1/translate"), ("post", "/v1/transcribe"),
                             ("get", "/")]:
            r = getattr(c, method)(path)
            assert r.status_code == 401 and "API key" in r.json()["error"], path
        assert c.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401
        ok = c.post("/v1/translate", json={"text": ["A dog."]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/metrics?api_key=s3cret").status_code == 200


def test_metrics_count_requests_errors_and_memory(client) -> None:
    client.post("/v1/translate", json={"text": ["A dog."]})
    client.post("/v1/translate", json={"text": ["A dog."], "model": "nope"})
    text = client.get("/metrics").text
    requests = re.search(r'transduce_requests_total\{route="/v1/translate"\} (\d+)', text)
    errors = re.search(r'transduce_errors_total\{route="/v1/translate",status="404"\} (\d+)', text)
    assert requests and int(requests.group(1)) >= 2 and errors and int(errors.group(1)) >= 1
    assert re.search(r'transduce_request_seconds_bucket\{route="/v1/translate",le="\+Inf"\} \d+', text)
    rss = re.search(r"process_resident_memory_bytes (\d+)", text)
    assert rss and int(rss.group(1)) > 10_000_000
    assert "transduce_active_streams 0" in text and "transduce_translate_queue 0" in text


def test_serve_defaults_to_the_bundled_models_on_loopback() -> None:
    from transduce.cli.main import build_parser
    from transduce.cli.serve import DEFAULT_MODELS
    from transduce.models.folder import resolve

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, [])
    assert [resolve(p) for p in DEFAULT_MODELS] == [MT, ASR]  # the two the fixture serves
