"""Connected digits on a synthetic FSDD: each fake "digit" is a tone whose pitch encodes the digit, so the
written audio can be decoded independently (tone runs -> digits, pauses -> gaps) and compared with the manifest."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from transduce.data.digits import (
    WORDS,
    band_limit,
    download_fsdd,
    extract_recordings,
    prepare_digits,
    recording_rate,
    tts_takes,
)
from transduce.data.manifest import read_manifest
from transduce.data.text import DataError

SPEAKERS = ("alice", "bob", "carol", "dave")
TONE_S, RATE = 0.2, 16000


def _fake_take(digit: int, take: int, rate: int = 8000) -> np.ndarray:
    rng = np.random.default_rng(100 * digit + take)
    t = np.arange(int(TONE_S * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * (300 + 100 * digit) * t)
    lead, tail = (1e-3 * rng.standard_normal(int(s * rate)) for s in (0.15 + 0.05 * take, 0.1))
    return np.concatenate([lead, tone, tail]).astype(np.float32)


@pytest.fixture(scope="module")
def fsdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fsdd")
    (folder / "recordings").mkdir()
    for speaker in SPEAKERS:
        for digit in range(10):
            for take in range(2):
                sf.write(folder / "recordings" / f"{digit}_{speaker}_{take}.wav", _fake_take(digit, take), 8000)
    return folder


def _decode(wave: np.ndarray) -> tuple[list[int], list[float]]:
    """Tone runs in 10 ms frames -> (digits by dominant frequency, pauses between runs in seconds)."""
    hop = RATE // 100
    loud = np.abs(wave[: len(wave) // hop * hop]).reshape(-1, hop).max(axis=1) > 0.1  # (frames,)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])))
    runs = edges.reshape(-1, 2)  # (runs, [start, end)) in frames
    digits = []
    for start, end in runs:
        segment = wave[start * hop: end * hop]
        freq = np.argmax(np.abs(np.fft.rfft(segment))) * RATE / len(segment)
        digits.append(round((freq - 300) / 100))
    return digits, [(b - a) / 100 for a, b in zip(runs[:-1, 1], runs[1:, 0], strict=True)]


def _build(fsdd: Path, out: Path, seed: int = 1) -> None:
    prepare_digits(out, source=fsdd, seed=seed, dev_speakers=("bob",), test_speakers=("carol",),
                   utterances={"train": 12, "dev": 5, "test": 5}, gap_ms=(50, 400), log=lambda _: None)


def test_audio_matches_manifest(fsdd: Path, tmp_path: Path) -> None:
    _build(fsdd, tmp_path / "out")
    for split, speakers in (("train", {"alice", "dave"}), ("dev", {"bob"}), ("test", {"carol"})):
        utts = read_manifest(tmp_path / "out" / f"{split}.jsonl")
        assert {u.speaker for u in utts} <= speakers
        for u in utts:
            assert u.audio == tmp_path / "out" / "audio" / split / f"{u.id}.wav"
            wave, rate = sf.read(u.audio, dtype="float32")
            assert rate == RATE and u.duration == len(wave) / rate
            words = u.text.split()
            assert 1 <= len(words) <= 7
            digits, pauses = _decode(wave)
            assert [WORDS[d] for d in digits] == words
            # a pause is the gap plus the 20 ms margins kept around both tones (10 ms frame resolution)
            assert all(0.05 + 0.04 - 0.02 <= p <= 0.4 + 0.04 + 0.02 for p in pauses), pauses
            take = TONE_S + 0.04
            low, high = len(words) * take + 0.05 * (len(words) - 1) + 0.2, len(words) * take + 0.4 * len(words) + 0.6
            assert low - 0.01 <= u.duration <= high + 0.01
    readme = (tmp_path / "out" / "README.txt").read_text()
    assert "CC BY-SA 4.0" in readme and "seed=1" in readme


def test_deterministic_by_seed(fsdd: Path, tmp_path: Path) -> None:
    _build(fsdd, tmp_path / "a")
    _build(fsdd, tmp_path / "b")
    _build(fsdd, tmp_path / "c", seed=2)
    for split in ("train", "dev", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
        for wav in (tmp_path / "a" / "audio" / split).glob("*.wav"):
            assert wav.read_bytes() == (tmp_path / "b" / "audio" / split / wav.name).read_bytes()
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()


def test_speaker_errors(fsdd: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dev_speakers: unknown speaker.*zed"):
        prepare_digits(tmp_path, source=fsdd, dev_speakers=("zed",), log=lambda _: None)
    with pytest.raises(DataError, match="no speakers left for train"):
        prepare_digits(tmp_path, source=fsdd, dev_speakers=("alice", "bob"), test_speakers=("carol", "dave"),
                       log=lambda _: None)


def _tarball(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extract_and_download_from_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = io.BytesIO()
    sf.write(wav, _fake_take(3, 0), 8000, format="WAV")
    top = "free-spoken-digit-dataset-1.0.10"
    _tarball(tmp_path / "fsdd.tar.gz", {f"{top}/recordings/3_alice_0.wav": wav.getvalue(),
                                        f"{top}/README.md": b"readme", "../3_evil_0.wav": b"x",
                                        f"{top}/recordings/notes.txt": b"x"})
    assert extract_recordings(tmp_path / "fsdd.tar.gz", tmp_path / "x") == 1
    assert [p.name for p in (tmp_path / "x").rglob("*") if p.is_file()] == ["3_alice_0.wav"]
    folder = download_fsdd(tmp_path / "cache", url=(tmp_path / "fsdd.tar.gz").as_uri())
    assert (folder / "recordings" / "3_alice_0.wav").read_bytes() == wav.getvalue()
    assert not list((tmp_path / "cache").glob("*.gz*"))
    _tarball(tmp_path / "empty.tar.gz", {f"{top}/README.md": b"readme"})
    with pytest.raises(DataError, match=r"empty\.tar\.gz: no recordings"):
        extract_recordings(tmp_path / "empty.tar.gz", tmp_path / "y")
    with pytest.raises(DataError, match="download failed"):
        download_fsdd(tmp_path / "cache2", url=(tmp_path / "missing.tar.gz").as_uri())


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@needs_espeak
def test_tts_speakers_add_training_utterances_only(fsdd: Path, tmp_path: Path) -> None:
    voices = ("espeak:en-us", "espeak:en-gb-x-rp+f4")
    kwargs = dict(source=fsdd, dev_speakers=("bob",), utterances={"train": 6, "dev": 3}, log=lambda _: None)
    prepare_digits(tmp_path / "plain", **kwargs)
    prepare_digits(tmp_path / "tts", tts_voices=voices, tts_utterances=8, tts_styles=2, **kwargs)
    plain, train = read_manifest(tmp_path / "plain" / "train.jsonl"), read_manifest(tmp_path / "tts" / "train.jsonl")
    assert [(u.id, u.text, u.speaker) for u in train[:6]] == [(u.id, u.text, u.speaker) for u in plain]
    extra = train[6:]
    assert [u.id for u in extra] == [f"train-tts-{i:06d}" for i in range(8)]
    assert {u.speaker for u in extra} <= {f"tts:{v}" for v in voices}
    for u in extra:
        wave, rate = sf.read(u.audio, dtype="float32")
        words = u.text.split()
        assert rate == RATE and u.duration == len(wave) / rate and 1 <= len(words) <= 7
        assert len(words) * 0.15 < u.duration < len(words) * 1.5 + 1.0  # spoken words, not silence
    assert {u.speaker for u in read_manifest(tmp_path / "tts" / "dev.jsonl")} == {"bob"}
    assert "tts_voices=" in (tmp_path / "tts" / "README.txt").read_text()
    assert "tts_full_band=False" in (tmp_path / "tts" / "README.txt").read_text()


@needs_espeak
def test_tts_takes_speak_each_digit_in_every_style() -> None:
    takes = tts_takes(["espeak:en-us+f2"], styles=3, sample_rate=RATE)
    assert list(takes) == ["tts:espeak:en-us+f2"]
    per_digit = takes["tts:espeak:en-us+f2"]
    assert len(per_digit) == 10 and all(len(options) == 3 for options in per_digit)
    for options in per_digit:
        for wave in options:
            assert 0.15 < len(wave) / RATE < 1.5 and np.abs(wave).max() > 0.05  # trimmed, audible
    # styles differ: the same word is not spoken identically three times
    assert len({len(w) for w in per_digit[3]}) > 1


def _share_above(wave: np.ndarray, hz: float, rate: int = RATE) -> float:
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    return float(power[np.fft.rfftfreq(len(wave), 1 / rate) > hz].sum() / power.sum())


def test_band_limit_removes_what_an_8_khz_recording_cannot_hold(fsdd: Path) -> None:
    t = np.arange(RATE) / RATE
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = band_limit((low + high).astype(np.float32), RATE, 8000)
    assert out.shape == low.shape and out.dtype == np.float32
    assert _share_above(out, 4000) < 1e-6  # the 6 kHz tone is gone ...
    middle = slice(RATE // 10, -RATE // 10)  # (away from the resampler's edges)
    assert np.abs(out[middle] - low[middle]).max() < 1e-2  # ... and the 1 kHz tone passes unchanged
    wide = (low + high).astype(np.float32)
    assert band_limit(wide, RATE, RATE) is wide
    assert recording_rate(fsdd) == 8000


@needs_espeak
def test_tts_takes_are_band_limited_like_the_recordings() -> None:
    """Band-limited TTS takes (the default in prepare_digits) have no energy above 4 kHz, where the full-band
    takes of the same words do (fricatives): synthetic speakers must not carry cues real 8 kHz ones lack."""
    full = tts_takes(["espeak:en-us"], styles=1, sample_rate=RATE)["tts:espeak:en-us"]
    narrow = tts_takes(["espeak:en-us"], styles=1, sample_rate=RATE, band_rate=8000)["tts:espeak:en-us"]
    six_full, six_narrow = full[6][0], narrow[6][0]
    assert six_full.shape == six_narrow.shape
    assert _share_above(six_full, 4200) > 1e-2 and _share_above(six_narrow, 4200) < 1e-5


def test_tts_options_are_checked(fsdd: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tts_utterances .* and tts_voices .* go together"):
        prepare_digits(tmp_path, source=fsdd, dev_speakers=("bob",), tts_utterances=5, log=lambda _: None)
    with pytest.raises(ValueError, match="RESERVED for held-out evaluation"):
        tts_takes(["flite:awb"])
