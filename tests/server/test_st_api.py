"""POST /v1/speech-translate of ``transduce serve``: an end-to-end speech translation model (a tiny one trained on
tone "speech" in the test) answers as ``SpeechTranslator`` does, in the language asked for; unknown languages,
bad audio and models of another kind are one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from transduce.cli.config import load_recipe
from transduce.data.manifest import read_manifest
from transduce.data.tones import write_tone_translations
from transduce.server.app import Served, create_app
from transduce.speech_translate import SpeechTranslator
from transduce.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
MT = ROOT / "models" / "multi30k-en-de"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def st_model(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("st-serve")
    write_tone_translations(base / "data", train=30, valid=4)
    cfg = load_recipe(ROOT / "recipes" / "tiny-tones-st.yaml", [f"data.dir={base / 'data'}", "train.max_updates=20",
                                                                 "train.eval_every=20", "train.eval_bleu=false"])
    Trainer(cfg, base / "st", log=lambda _: None, show_progress=False).fit()
    return base


@pytest.fixture
def client(st_model: Path):
    with TestClient(create_app(Served.load([st_model / "st", MT]))) as c:
        yield c


def test_speech_translate_equals_the_speech_translator(client, st_model: Path) -> None:
    assert {"name": "st", "task": "speech_translation"} in client.get("/health").json()["models"]
    wavs = [u.audio for u in read_manifest(st_model / "data" / "dev.jsonl")[:2]]
    translator = SpeechTranslator.load(st_model / "st")
    for lang, query in (("de", ""), ("fr", "?tgt_lang=fr")):
        for wav in wavs:
            r = client.post(f"/v1/speech-translate{query}", content=Path(wav).read_bytes())
            assert r.status_code == 200, r.text
            assert r.json() == {"text": translator.translate([wav], lang)[0], "tgt_lang": lang, "model": "st"}


def test_refusals_are_one_line(client, st_model: Path) -> None:
    wav = Path(read_manifest(st_model / "data" / "dev.jsonl")[0].audio).read_bytes()
    cases = [("?tgt_lang=cs", wav, 400, "tgt_lang cs: this model translates into de, fr"),
             ("", b"not audio", 400, "audio: "), ("", b"", 400, "request body: empty"),
             ("?model=multi30k-en-de", wav, 404, "no such speech_translation model")]
    for query, body, status, message in cases:
        r = client.post(f"/v1/speech-translate{query}", content=body)
        assert r.status_code == status and message in r.json()["error"] and "\n" not in r.json()["error"], r.text
