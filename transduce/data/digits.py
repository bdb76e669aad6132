"""Connected-digit utterances built from the Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0).

Each utterance joins 1-7 isolated digit recordings of one speaker (trimmed of leading/trailing
silence, resampled) with random gaps of faint noise; its transcript is the digits in words
("three one four"). Splits are disjoint by speaker. Everything is drawn from one seed, so the same
arguments give byte-identical manifests and audio.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

from transduce.data.audio import load_audio, write_wav
from transduce.data.manifest import SplitSummary, Utterance, summarize, write_manifest
from transduce.data.text import DataError

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_UTTERANCES: Mapping[str, int] = MappingProxyType({"train": 6000, "dev": 600, "test": 600})
_NAME = re.compile(r"(\d)_([A-Za-z]+)_(\d+)\.wav")
_MEMBER = re.compile(r"(?:[^/]+/)?recordings/(\d_[A-Za-z]+_\d+\.wav)")
_DITHER = 3e-4  # gaps are faint Gaussian noise (about -70 dBFS) rather than digital zeros
_TRIM_DB = -40.0  # quieter frames (relative to the loudest 10 ms) are silence; -30 dB clipped the "s" of "six"
_TRIM_MARGIN_S = 0.02
_PAD_MS = (100.0, 300.0)


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transduce"


def extract_recordings(archive: str | Path, dest: str | Path) -> int:
    """Extract ``recordings/D_SPEAKER_N.wav`` members of an FSDD tarball into ``dest/recordings``; their number.

    Other members are ignored; names are rebuilt from the pattern, so nothing lands outside ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    count = 0
    try:
        (tmp / "recordings").mkdir()
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                match = _MEMBER.fullmatch(member.name)
                if match and member.isfile():
                    data = tar.extractfile(member)
                    assert data is not None  # regular files always have data
                    (tmp / "recordings" / match.group(1)).write_bytes(data.read())
                    count += 1
        if count == 0:
            raise DataError(f"{archive}: no recordings/D_SPEAKER_N.wav files inside; not an FSDD archive")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except tarfile.TarError as err:
        raise DataError(f"{archive}: not a readable tar archive ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return count


def download_fsdd(cache: str | Path | None = None, *, url: str = FSDD_URL) -> Path:
    """Download and extract FSDD into ``cache/fsdd`` (default ``~/.cache/transduce``) unless already there."""
    target = Path(cache or default_cache()) / "fsdd"
    if any((target / "recordings").glob("*.wav")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = target.parent / "fsdd.tar.gz"
    part = archive.with_name(archive.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc="FSDD", disable=None, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as err:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: download failed ({err}); pass source=DIR with a local FSDD copy") from None
    part.rename(archive)
    extract_recordings(archive, target)
    archive.unlink()
    return target


def _trim(wave: np.ndarray, rate: int) -> np.ndarray:
    """``wave`` without leading/trailing near-silence (10 ms frames below _TRIM_DB of the loudest), plus a margin."""
    hop = rate // 100
    frames = len(wave) // hop
    if frames == 0:
        return wave
    rms = np.sqrt(np.mean(wave[: frames * hop].reshape(frames, hop) ** 2, axis=1))  # (frames,)
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (_TRIM_DB / 20))
    margin = int(_TRIM_MARGIN_S * rate)
    return wave[max(0, loud[0] * hop - margin): min(len(wave), (loud[-1] + 1) * hop + margin)]


def _recordings(folder: Path) -> list[tuple[int, str, int, Path]]:
    """(digit, speaker, index, path) of every ``D_SPEAKER_N.wav`` in ``folder/recordings``; an error if none."""
    found = [(int(m.group(1)), m.group(2), int(m.group(3)), path) for path in (folder / "recordings").glob("*.wav")
             if (m := _NAME.fullmatch(path.name))]
    if not found:
        raise DataError(f"{folder / 'recordings'}: no D_SPEAKER_N.wav recordings")
    return found


def recording_rate(folder: Path) -> int:
    """The lowest sample rate among the ``D_SPEAKER_N.wav`` recordings in ``folder/recordings`` (FSDD: 8000)."""
    return min(sf.info(str(path)).samplerate for *_, path in _recordings(folder))


def load_takes(folder: Path, sample_rate: int) -> dict[str, list[list[np.ndarray]]]:
    """{speaker: [takes of digit 0, ..., takes of digit 9]}: trimmed waveforms, takes ordered by index."""
    found: dict[str, list[list[tuple[int, Path]]]] = {}
    for digit, speaker, index, path in _recordings(folder):
        found.setdefault(speaker, [[] for _ in WORDS])[digit].append((index, path))
    takes = {}
    for speaker in sorted(found):
        for digit, entries in enumerate(found[speaker]):
            if not entries:
                raise DataError(f"{folder / 'recordings'}: speaker {speaker!r} has no recording of digit {digit}")
        takes[speaker] = [[_trim(load_audio(p, sample_rate).numpy(), sample_rate) for _, p in sorted(entries)]
                          for entries in found[speaker]]
    return takes


def band_limit(wave: np.ndarray, sample_rate: int, band_rate: int) -> np.ndarray:
    """``wave`` through a ``band_rate`` channel: resampled down to it and back (soxr HQ), so nothing is left
    above ``band_rate / 2`` Hz, as in a recording made at that rate; unchanged when ``band_rate >= sample_rate``."""
    if band_rate >= sample_rate:
        return wave
    narrow = soxr.resample(wave, sample_rate, band_rate, quality="HQ")
    return soxr.resample(narrow, band_rate, sample_rate, quality="HQ")[: len(wave)].astype(wave.dtype)


def tts_takes(voices: Sequence[str], *, styles: int = 6, seed: int = 1, sample_rate: int = 16000,
              workers: int = 1, band_rate: int | None = None) -> dict[str, list[list[np.ndarray]]]:
    """The ten digit words spoken in isolation by local TTS voices (``data.captions`` names and engines:
    ``espeak:en-us+f2``, ``flite:slt``, ``festival:kal_diphone``), each voice in ``styles`` random speaking
    styles (espeak rate and pitch, flite/festival duration stretch): ``{"tts:VOICE": [takes of digit 0,
    ..., 9]}``, trimmed like the FSDD takes. Voices reserved for held-out evaluation are refused.
    ``band_rate``: pass every take through a channel of that rate (:func:`band_limit`), the rate the real
    recordings were made at, so synthetic and real speakers differ in voice and not in bandwidth."""
    from transduce.data.captions import TTSItem, parse_voice, random_style, synthesize

    if styles < 1:
        raise DataError(f"tts styles must be >= 1, got {styles}")
    rng = np.random.default_rng([seed, 99])
    parsed = [parse_voice(v) for v in voices]
    with tempfile.TemporaryDirectory() as tmp:
        items: list[TTSItem] = []
        for voice in parsed:
            for style in range(styles):
                rate, pitch, stretch = random_style(rng)
                items += [TTSItem(f"{voice}-{style}-{d}", word, voice, rate, pitch, stretch,
                                  Path(tmp) / f"{len(items) + d}.wav") for d, word in enumerate(WORDS)]
        utts, _ = synthesize(items, sample_rate, workers, "digits tts")
        takes: dict[str, list[list[np.ndarray]]] = {f"tts:{v}": [[] for _ in WORDS] for v in parsed}
        for item, utt in zip(items, utts, strict=True):
            wave = _trim(load_audio(utt.audio, sample_rate).numpy(), sample_rate)
            if band_rate is not None:
                wave = band_limit(wave, sample_rate, band_rate)
            takes[f"tts:{item.voice}"][WORDS.index(item.text)].append(wave)
    return takes


def _utterance(rng: np.random.Generator, takes: list[list[np.ndarray]], *, digits: tuple[int, int],
               gap_ms: tuple[float, float], rate: int) -> tuple[np.ndarray, str]:
    """One connected-digit waveform of a speaker and its transcript."""
    count = int(rng.integers(digits[0], digits[1] + 1))
    spoken = rng.integers(0, 10, count)
    silences_ms = [rng.uniform(*_PAD_MS), *rng.uniform(*gap_ms, count - 1), rng.uniform(*_PAD_MS)]
    pieces = []
    for i, ms in enumerate(silences_ms):
        pieces.append(_DITHER * rng.standard_normal(round(ms * rate / 1000)))
        if i < count:
            options = takes[spoken[i]]
            pieces.append(options[int(rng.integers(len(options)))])
    return np.concatenate(pieces).astype(np.float32), " ".join(WORDS[d] for d in spoken)


def _split_speakers(available: list[str], dev: tuple[str, ...], test: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    for name, chosen in (("dev_speakers", dev), ("test_speakers", test)):
        unknown = sorted(set(chosen) - set(available))
        if unknown:
            raise DataError(f"{name}: unknown speaker(s) {', '.join(unknown)} (FSDD has {', '.join(available)})")
    if set(dev) & set(test):
        raise DataError(f"speakers {', '.join(sorted(set(dev) & set(test)))} are in both dev and test")
    if not dev:
        raise DataError("dev_speakers must name at least one speaker")
    train = tuple(s for s in available if s not in dev and s not in test)
    if not train:
        raise DataError("no speakers left for train; hold out fewer speakers")
    splits = {"train": train, "dev": tuple(sorted(dev))}
    if test:
        splits["test"] = tuple(sorted(test))
    return splits


def _write_readme(out: Path, settings: str, summaries: list[SplitSummary]) -> None:
    (out / "README.txt").write_text(
        "Connected-digit utterances built by transduce.data.digits from the Free Spoken Digit Dataset\n"
        "(https://github.com/Jakobovski/free-spoken-digit-dataset), licensed CC BY-SA 4.0; this derived\n"
        "audio is shared under the same license. Each utterance joins 1 or more isolated digit recordings\n"
        "of one speaker, trimmed of leading/trailing silence, resampled with soxr, separated by random gaps\n"
        "of faint Gaussian noise and padded at both ends. Splits are disjoint by speaker.\n\n"
        f"Settings: {settings}\n\n" + "\n".join(str(s) for s in summaries) + "\n")


def _tts_utterances(out: Path, voices: Sequence[str], count: int, styles: int, *, seed: int,
                    digits: tuple[int, int], gap_ms: tuple[float, float], sample_rate: int,
                    workers: int, band_rate: int | None) -> list[Utterance]:
    """``count`` connected-digit training utterances of TTS speakers, written under ``out/audio/train``."""
    takes = tts_takes(voices, styles=styles, seed=seed, sample_rate=sample_rate, workers=workers,
                      band_rate=band_rate)
    speakers = sorted(takes)
    rng = np.random.default_rng([seed, 100])
    utts = []
    for i in tqdm(range(count), desc="digits train (tts)", unit="utt", disable=None, leave=False):
        speaker = speakers[int(rng.integers(len(speakers)))]
        wave, text = _utterance(rng, takes[speaker], digits=digits, gap_ms=gap_ms, rate=sample_rate)
        path = out / "audio" / "train" / f"train-tts-{i:06d}.wav"
        write_wav(path, torch.from_numpy(wave), sample_rate)
        utts.append(Utterance(path.stem, path, len(wave) / sample_rate, text, speaker))
    return utts


def prepare_digits(
    out: str | Path, *, source: str | Path | None = None, seed: int = 1, dev_speakers: tuple[str, ...] = ("nicolas",),
    test_speakers: tuple[str, ...] = (), utterances: Mapping[str, int] = DEFAULT_UTTERANCES, min_digits: int = 1,
    max_digits: int = 7, gap_ms: tuple[float, float] = (50.0, 400.0), sample_rate: int = 16000,
    tts_voices: Sequence[str] = (), tts_utterances: int = 0, tts_styles: int = 6, tts_full_band: bool = False,
    workers: int = 1, log: Callable[[str], None] = print,
) -> list[SplitSummary]:
    """Write ``out/{train,dev[,test]}.jsonl``, ``out/audio/{split}/ID.wav`` and ``out/README.txt``.

    ``source`` is an FSDD folder holding ``recordings/``; without it FSDD is downloaded to the cache.
    ``tts_utterances`` more training utterances (ids ``train-tts-N``) are built the same way from digit
    words spoken by ``tts_voices`` (see :func:`tts_takes`), one synthetic speaker per voice; dev and test
    stay real FSDD speakers. The TTS takes are band-limited to the lowest rate of the FSDD recordings
    (8 kHz), as the real takes are, unless ``tts_full_band``.
    """
    if tts_utterances < 0 or (tts_utterances > 0) != bool(tts_voices):
        raise DataError(f"tts_utterances ({tts_utterances}) and tts_voices ({list(tts_voices)}) go together: "
                        "both set or both empty")
    if not 1 <= min_digits <= max_digits:
        raise DataError(f"need 1 <= min_digits <= max_digits, got {min_digits} and {max_digits}")
    if not 0 <= gap_ms[0] <= gap_ms[1]:
        raise DataError(f"gap_ms must be (low, high) with 0 <= low <= high, got {gap_ms}")
    folder = Path(source) if source is not None else download_fsdd()
    takes = load_takes(folder, sample_rate)
    splits = _split_speakers(list(takes), tuple(dev_speakers), tuple(test_speakers))
    out = Path(out)
    summaries = []
    for index, (split, speakers) in enumerate(splits.items()):
        if split not in utterances:
            raise DataError(f"utterances: no count for split {split!r} (got {dict(utterances)})")
        rng = np.random.default_rng([seed, index])
        audio_dir = out / "audio" / split
        shutil.rmtree(audio_dir, ignore_errors=True)  # generated content only; stale files would linger
        utts = []
        for i in tqdm(range(utterances[split]), desc=f"digits {split}", unit="utt", disable=None, leave=False):
            speaker = speakers[int(rng.integers(len(speakers)))]
            wave, text = _utterance(rng, takes[speaker], digits=(min_digits, max_digits), gap_ms=gap_ms,
                                    rate=sample_rate)
            utt_id = f"{split}-{i:06d}"
            write_wav(audio_dir / f"{utt_id}.wav", torch.from_numpy(wave), sample_rate)
            utts.append(Utterance(utt_id, audio_dir / f"{utt_id}.wav", len(wave) / sample_rate, text, speaker))
        if split == "train" and tts_utterances:
            utts += _tts_utterances(out, tts_voices, tts_utterances, tts_styles, seed=seed,
                                    digits=(min_digits, max_digits), gap_ms=gap_ms, sample_rate=sample_rate,
                                    workers=workers, band_rate=None if tts_full_band else recording_rate(folder))
        write_manifest(out / f"{split}.jsonl", utts)
        summaries.append(summarize(split, utts))
        log(f"digits {summaries[-1]}")
    settings = (f"seed={seed} digits={min_digits}-{max_digits} gap_ms={gap_ms} pad_ms={_PAD_MS} "
                f"sample_rate={sample_rate} speakers={ {k: list(v) for k, v in splits.items()} }"
                + (f" tts_voices={list(tts_voices)} tts_utterances={tts_utterances} tts_styles={tts_styles}"
                   f" tts_full_band={tts_full_band}" if tts_utterances else ""))
    _write_readme(out, settings, summaries)
    return summaries


def write_long_recording(folder: str | Path, out: str | Path, *, seconds: float, speaker: str = "george",
                         seed: int = 1, pause: tuple[float, float] = (1.0, 2.5)) -> list[tuple[float, float, str]]:
    """A long test recording at the FSDD recordings' rate: connected-digit utterances (2-5 digits) of one
    ``speaker`` separated by ``pause`` seconds of faint noise, about ``seconds`` long, written block by block
    (16-bit WAV) so hours fit in little memory. Returns (start, end, text) of each utterance, in seconds."""
    folder = Path(folder)
    rate = recording_rate(folder)
    found = sorted((digit, index, path) for digit, name, index, path in _recordings(folder) if name == speaker)
    takes: list[list[np.ndarray]] = [[] for _ in WORDS]
    for digit, _, path in found:
        takes[digit].append(_trim(load_audio(path, rate).numpy(), rate))
    if not all(takes):
        raise DataError(f"{folder / 'recordings'}: speaker {speaker!r} lacks recordings of some digits")
    rng = np.random.default_rng(seed)
    truth: list[tuple[float, float, str]] = []
    written = 0
    with sf.SoundFile(str(out), "w", rate, 1, "PCM_16", format="WAV") as f:
        while written < seconds * rate:
            gap = _DITHER * rng.standard_normal(round(rng.uniform(*pause) * rate))
            wave, text = _utterance(rng, takes, digits=(2, 5), gap_ms=(50.0, 300.0), rate=rate)
            f.write(np.concatenate([gap, wave]).astype(np.float32))
            truth.append(((written + len(gap)) / rate, (written + len(gap) + len(wave)) / rate, text))
            written += len(gap) + len(wave)
    return truth
