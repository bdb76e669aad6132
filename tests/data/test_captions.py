"""Spoken captions: text normalization, voice rules (reserved, disjoint), and a tiny real TTS run."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import transduce.data.captions as captions
from transduce.data.captions import TTSError, normalize_text, parse_voice, prepare_captions, prepare_heldout
from transduce.data.manifest import read_manifest

VAL = ["A dog runs on the beach.", "Two men play chess.", "A girl in a red coat.", "People wait for a bus.",
       "A child eats ice cream."]
TRAIN = ["A man's bike is red.", "Two men play chess.", "...", "A woman sings.", "Kids' toys on a T-shirt!",
         "A cat sleeps.", "A boy jumps.", "The chef cooks.", "A bird flies.", "Three dogs & a cat."]
HAVE_TTS = all(shutil.which(b) for b in ("espeak-ng", "flite", "festival"))
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="espeak-ng, flite and festival are not all installed")
TRAIN_VOICES = ("espeak:en-us+f2", "flite:slt", "festival:kal_diphone")
DEV_VOICES = ("espeak:en-gb-x-gbcwmd+f3", "flite:rms")


@pytest.fixture
def m30k(tmp_path: Path) -> Path:
    for name, lines in (("train", TRAIN), ("val", VAL), ("test_2016_flickr", VAL)):
        with gzip.open(tmp_path / f"{name}.en.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
    return tmp_path


def test_normalize_text() -> None:
    assert normalize_text("A man's  Bike, 'quoted'; kids' T-shirt & 3 dogs!") == \
        "a man's bike quoted kids' t shirt and 3 dogs"
    assert normalize_text(" ... ' ") == ""


@pytest.mark.parametrize("spec, message", [
    ("flite:awb", "RESERVED for held-out"), ("espeak:en-gb-scotland", "RESERVED"),
    ("espeak:en-gb-scotland+f2", "RESERVED"), ("flite:awb_time", "unknown flite voice 'awb_time'"),
    ("espeak:en-us+zz", "variants are espeak-only"), ("say:alex", "engine must be one of"),
])
def test_voice_rules(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_voice(spec)


def test_refusals_before_synthesis(m30k: Path, tmp_path: Path) -> None:
    assert str(parse_voice("flite:awb", heldout=True)) == "flite:awb"
    with pytest.raises(ValueError, match="RESERVED"):
        prepare_captions(tmp_path / "o", source=m30k, train_voices=("flite:awb",), log=lambda _: None)
    with pytest.raises(ValueError, match="disjoint, both use kal"):
        prepare_captions(tmp_path / "o", source=m30k, train_voices=("flite:kal",), dev_voices=("festival:kal_diphone",))
    with pytest.raises(ValueError, match="pass heldout=True"):
        prepare_heldout(tmp_path / "o", source=m30k)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match="its own folder"):
        prepare_heldout(tmp_path / "o", heldout=True, source=m30k)


def test_missing_binary_is_named(m30k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(captions.shutil, "which", lambda name: None if name == "espeak-ng" else "/bin/true")
    with pytest.raises(TTSError, match=r"espeak-ng not found .*install it \(apt-get install espeak-ng\)"):
        prepare_captions(tmp_path / "o", source=m30k, train_voices=TRAIN_VOICES, dev_voices=DEV_VOICES,
                         train_sentences=2, dev_sentences=1, log=lambda _: None)


def _check_split(path: Path, lines: list[str], voices: tuple[str, ...]) -> list[str]:
    utts = read_manifest(path)
    for u in utts:
        line = int(u.id.split("-")[1])
        assert u.text == normalize_text(lines[line - 1]) and u.speaker in voices
        wave, rate = sf.read(u.audio, dtype="float32")
        assert rate == 16000 and wave.ndim == 1 and u.duration == len(wave) / rate
        assert 0.03 * len(u.text) < u.duration < 0.3 * len(u.text) + 1.0
        assert np.sqrt(np.mean(wave**2)) > 0.01  # speech, not silence
    return [u.text for u in utts]


@needs_tts
def test_tiny_run(m30k: Path, tmp_path: Path) -> None:
    kwargs = dict(source=m30k, train_voices=TRAIN_VOICES, dev_voices=DEV_VOICES, train_sentences=6, dev_sentences=3,
                  log=lambda _: None)
    report = prepare_captions(tmp_path / "a", **kwargs)
    train = _check_split(tmp_path / "a" / "train.jsonl", TRAIN, TRAIN_VOICES)
    dev = _check_split(tmp_path / "a" / "dev.jsonl", VAL, DEV_VOICES)
    assert len(train) == 6 and len(dev) == 3
    assert "two men play chess" not in train and "" not in train  # a val caption and an empty one are never used
    assert [s.utterances for s in report.splits] == [6, 3] and all(r > 0 for r in report.rates.values())
    assert set(report.splits[0].speakers) == set(TRAIN_VOICES)  # every engine ran (seed 1 happens to pick all)
    prepare_captions(tmp_path / "b", workers=2, **kwargs)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()


@needs_tts
def test_heldout_run(m30k: Path, tmp_path: Path) -> None:
    prepare_heldout(tmp_path / "h", heldout=True, source=m30k, sentences=2, log=lambda _: None)
    _check_split(tmp_path / "h" / "test.jsonl", VAL, captions.RESERVED_VOICES)
