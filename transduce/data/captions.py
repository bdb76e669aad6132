"""Multi30k English captions spoken by local TTS voices (espeak-ng, flite, festival).

A voice is named ``ENGINE:NAME[+VARIANT]``: ``espeak:en-us+f2``, ``flite:slt``, ``festival:kal_diphone``;
the manifest's ``speaker`` is that name. Splits are disjoint by voice (and by speaker behind the voice:
flite kal/kal16 and festival kal_diphone are all Kal, so they count as one). Transcripts are normalized
(lowercase; letters, digits, apostrophes; numbers stay digits, which occur in about 1% of captions) and
the TTS reads the normalized text, so the audio says exactly what the transcript says.

RESERVED voices (flite ``awb``, espeak-ng ``en-gb-scotland``) are kept for held-out evaluation: training
and dev data never use them, and only :func:`prepare_heldout` with ``heldout=True`` may speak them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from transduce.data.audio import load_audio, write_wav
from transduce.data.manifest import SplitSummary, Utterance, summarize, write_manifest
from transduce.data.text import DataError, read_lines

BINARIES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}
INSTALL = {"espeak": "apt-get install espeak-ng", "flite": "apt-get install flite",
           "festival": "apt-get install festival festvox-kallpc16k"}
ESPEAK_VOICES = ("en", "en-us", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
                 "en-gb-scotland")
ESPEAK_VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
FLITE_VOICES = ("kal", "kal16", "rms", "slt", "awb")  # not awb_time: a limited-domain (time of day) voice
FESTIVAL_VOICES = ("kal_diphone",)
RESERVED_VOICES = ("flite:awb", "espeak:en-gb-scotland")
TRAIN_VOICES = ("espeak:en-us", "espeak:en-us+f2", "espeak:en+m3", "espeak:en-gb-x-rp", "espeak:en-gb-x-rp+f4",
                "espeak:en-029+m2", "espeak:en-gb-x-gbclan+m5", "espeak:en-us-nyc+f1", "flite:kal", "flite:kal16",
                "flite:slt", "festival:kal_diphone")
DEV_VOICES = ("espeak:en-gb-x-gbcwmd+f3", "flite:rms")  # accent, variant and flite speaker unseen in train
_KAL = {"flite:kal", "flite:kal16", "festival:kal_diphone"}
_FESTIVAL_BATCH = 64  # festival takes ~0.3 s to start: one process speaks this many sentences


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class CaptionsReport:
    splits: list[SplitSummary]
    rates: dict[str, float] = field(default_factory=dict)
    """Utterances synthesized per second (one worker, including resampling and writing), by engine."""


@dataclass(frozen=True)
class TTSItem:
    """One utterance to synthesize: text, voice and speaking style, and where its WAV goes."""

    id: str
    text: str
    voice: Voice
    rate: int  # espeak words per minute
    pitch: int  # espeak pitch 0-99
    stretch: float  # flite/festival duration stretch
    path: Path


class TTSError(RuntimeError):
    """A TTS program is missing or failed; the message names the voice (and utterance)."""


def parse_voice(spec: str, *, heldout: bool = False) -> Voice:
    """``ENGINE:NAME[+VARIANT]`` -> Voice; reserved voices only with ``heldout=True``."""
    engine, _, rest = spec.partition(":")
    name, _, variant = rest.partition("+")
    known = {"espeak": ESPEAK_VOICES, "flite": FLITE_VOICES, "festival": FESTIVAL_VOICES}
    if engine not in known:
        raise ValueError(f"voice {spec!r}: engine must be one of {', '.join(known)} (as in 'espeak:en-us')")
    if name not in known[engine]:
        raise ValueError(f"voice {spec!r}: unknown {engine} voice {name!r} (known: {', '.join(known[engine])})")
    if variant and (engine != "espeak" or variant not in ESPEAK_VARIANTS):
        raise ValueError(f"voice {spec!r}: variants are espeak-only, one of {', '.join(ESPEAK_VARIANTS)}")
    if f"{engine}:{name}" in RESERVED_VOICES and not heldout:
        raise ValueError(f"voice {spec!r} is RESERVED for held-out evaluation and never used for train or dev; "
                         "build a held-out set with prepare_heldout(..., heldout=True)")
    return Voice(engine, name, variant)


def normalize_text(line: str) -> str:
    """Lowercase; keep letters, digits and word-internal (or plural-possessive) apostrophes; collapse spaces."""
    line = line.lower().replace("\u2019", "'").replace("\u2018", "'").replace("&", " and ").replace("%", " percent ")
    words = []
    for word in "".join(c if c.isalnum() or c == "'" else " " for c in line).split():
        word = word.lstrip("'")
        word = word if word.endswith("s'") else word.rstrip("'")
        if word:
            words.append(word)
    return " ".join(words)


def _check_binaries(voices: Sequence[Voice]) -> None:
    for engine in sorted({v.engine for v in voices}):
        if shutil.which(BINARIES[engine]) is None:
            raise TTSError(f"{BINARIES[engine]} not found (needed by {engine} voices): install it ({INSTALL[engine]})")


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TTSError(f"{what}: {cmd[0]} failed ({err})") from None
    if done.returncode != 0:
        raise TTSError(f"{what}: {cmd[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")


def _speak(items: list[TTSItem], tmp: Path) -> list[Path]:
    """Synthesize ``items`` (one engine; several only for festival) into WAVs under ``tmp``."""
    voice, wavs = items[0].voice, [tmp / f"{i}.wav" for i in range(len(items))]
    what = f"{voice} ({items[0].id})"
    if voice.engine == "espeak":
        item = items[0]
        _run(["espeak-ng", "-v", f"{voice.name}+{voice.variant}" if voice.variant else voice.name, "-s",
              str(item.rate), "-p", str(item.pitch), "-w", str(wavs[0]), item.text], what)
    elif voice.engine == "flite":
        _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={items[0].stretch}", "-t", items[0].text,
              "-o", str(wavs[0])], what)
    else:  # festival in batch mode; normalized text has no quotes or backslashes to escape
        lines = [f"(voice_{voice.name})"]
        for item, wav in zip(items, wavs, strict=True):
            lines.append(f"(Parameter.set 'Duration_Stretch {item.stretch})")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{item.text}")) "{wav}" \'riff)')
        (tmp / "script.scm").write_text("\n".join(lines) + "\n")
        _run(["festival", "--batch", str(tmp / "script.scm")], f"{what} and {len(items) - 1} more")
    return wavs


def _job(items: list[TTSItem], sample_rate: int) -> tuple[list[Utterance], float]:
    """Speak, resample and write ``items``; their utterances and the seconds it took."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        utts = []
        for item, wav in zip(items, _speak(items, Path(tmp)), strict=True):
            if not wav.is_file():
                raise TTSError(f"{item.voice} ({item.id}): {BINARIES[item.voice.engine]} wrote no audio")
            wave = load_audio(wav, sample_rate)
            write_wav(item.path, wave, sample_rate)
            utts.append(Utterance(item.id, item.path, len(wave) / sample_rate, item.text, str(item.voice)))
    return utts, time.perf_counter() - start


def synthesize(items: list[TTSItem], sample_rate: int, workers: int,
                desc: str) -> tuple[list[Utterance], dict[str, list[float]]]:
    """Utterances of ``items`` in order, and {engine: [utterances, seconds]}."""
    festival = [it for it in items if it.voice.engine == "festival"]
    jobs = [[it] for it in items if it.voice.engine != "festival"]
    jobs += [festival[i: i + _FESTIVAL_BATCH] for i in range(0, len(festival), _FESTIVAL_BATCH)]
    done: dict[str, Utterance] = {}
    timing: dict[str, list[float]] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(items), desc=desc, unit="utt",
                                                            disable=None, leave=False) as bar:
        for job, (utts, seconds) in zip(jobs, pool.map(lambda j: _job(j, sample_rate), jobs), strict=True):
            done.update((u.id, u) for u in utts)
            stats = timing.setdefault(job[0].voice.engine, [0, 0.0])
            stats[0], stats[1] = stats[0] + len(job), stats[1] + seconds
            bar.update(len(job))
    return [done[it.id] for it in items], timing


def _sentences(source: Path, split: str) -> list[str]:
    gz = source / f"{split}.en.gz"
    return read_lines(gz if gz.is_file() else source / f"{split}.en")


def random_style(rng: np.random.Generator) -> tuple[int, int, float]:
    """A random speaking style: espeak rate (words per minute) and pitch, flite/festival duration stretch."""
    return int(rng.integers(140, 191)), int(rng.integers(30, 71)), round(float(rng.uniform(0.9, 1.15)), 3)


def _plan(split: str, lines: list[str], count: int, voices: Sequence[Voice], rng: np.random.Generator,
          out: Path, exclude: Set[str] = frozenset()) -> list[TTSItem]:
    """``count`` random sentences (by line order) of ``lines``, each with a random voice and speaking style."""
    texts = [normalize_text(line) for line in lines]
    pool = [i for i, t in enumerate(texts) if t and t not in exclude]
    if count > len(pool):
        raise DataError(f"{split}: asked for {count} sentences but only {len(pool)} are usable")
    items = []
    for i in sorted(rng.choice(len(pool), size=count, replace=False)):
        line = pool[i] + 1
        voice = voices[int(rng.integers(len(voices)))]
        rate, pitch, stretch = random_style(rng)
        utt_id = f"{split}-{line:05d}"
        path = out / "audio" / split / f"{utt_id}.wav"
        items.append(TTSItem(utt_id, texts[line - 1], voice, rate, pitch, stretch, path))
    return items


def _source(source: str | Path | None) -> Path:
    if source is not None:
        return Path(source)
    from transduce.data.multi30k import prepare_multi30k

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transduce" / "multi30k"
    if not (cache / "val.en").is_file():
        prepare_multi30k(cache, langs=("en",))
    return cache


def _write(out: Path, plans: dict[str, list[TTSItem]], sample_rate: int, workers: int,
           log: Callable[[str], None]) -> CaptionsReport:
    _check_binaries([it.voice for items in plans.values() for it in items])
    summaries: list[SplitSummary] = []
    timing: dict[str, list[float]] = {}  # {engine: [utterances, seconds]}
    for split, items in plans.items():
        shutil.rmtree(out / "audio" / split, ignore_errors=True)  # generated content only
        utts, split_timing = synthesize(items, sample_rate, workers, f"captions {split}")
        write_manifest(out / f"{split}.jsonl", utts)
        summaries.append(summarize(split, utts))
        log(f"captions {summaries[-1]}")
        for engine, (n, seconds) in split_timing.items():
            total = timing.setdefault(engine, [0, 0.0])
            total[0], total[1] = total[0] + n, total[1] + seconds
    rates = {engine: n / seconds for engine, (n, seconds) in timing.items()}
    log("synthesis speed: " + ", ".join(f"{e} {r:.1f} utt/s" for e, r in sorted(rates.items())))
    return CaptionsReport(summaries, rates)


def prepare_captions(
    out: str | Path, *, source: str | Path | None = None, seed: int = 1, train_voices: Sequence[str] = TRAIN_VOICES,
    dev_voices: Sequence[str] = DEV_VOICES, train_sentences: int = 10000, dev_sentences: int = 1000,
    sample_rate: int = 16000, workers: int = 1, log: Callable[[str], None] = print,
) -> CaptionsReport:
    """Write ``out/{train,dev}.jsonl`` and ``out/audio/{split}/ID.wav``: Multi30k train (val for dev) captions,
    each spoken by one random voice of its split. ``source`` holds ``{train,val}.en[.gz]`` (default: download)."""
    train = [parse_voice(v) for v in train_voices]
    dev = [parse_voice(v) for v in dev_voices]
    family = {str(v): "kal" if str(v) in _KAL else str(v) for v in train + dev}
    shared = sorted({family[str(v)] for v in train} & {family[str(v)] for v in dev})
    if not train or not dev:
        raise ValueError("train_voices and dev_voices must each name at least one voice")
    if shared:
        raise ValueError(f"train and dev voices must be disjoint, both use {', '.join(shared)} "
                         "(flite kal/kal16 and festival kal_diphone are the same speaker)")
    folder = _source(source)
    val = _sentences(folder, "val")
    held = {normalize_text(s) for s in val}  # no dev caption is also a train caption
    rngs = [np.random.default_rng([seed, i]) for i in range(2)]  # one per split: dev stays put if train grows
    plans = {"train": _plan("train", _sentences(folder, "train"), train_sentences, train, rngs[0], Path(out), held),
             "dev": _plan("dev", val, dev_sentences, dev, rngs[1], Path(out))}
    return _write(Path(out), plans, sample_rate, workers, log)


def prepare_heldout(
    out: str | Path, *, heldout: bool = False, source: str | Path | None = None, seed: int = 1,
    voices: Sequence[str] = RESERVED_VOICES, sentences: int = 1000, sample_rate: int = 16000, workers: int = 1,
    log: Callable[[str], None] = print,
) -> CaptionsReport:
    """Write a held-out ``out/test.jsonl`` from Multi30k test_2016_flickr, spoken by the RESERVED voices.

    For evaluation only: requires ``heldout=True`` and refuses a folder that holds train or dev data.
    """
    if heldout is not True:
        raise ValueError("prepare_heldout speaks the RESERVED evaluation voices; pass heldout=True to confirm "
                         "the result is used for evaluation only, never for training or tuning")
    out = Path(out)
    for name in ("train.jsonl", "dev.jsonl"):
        if (out / name).exists():
            raise ValueError(f"{out / name} exists: write held-out audio to its own folder, apart from training data")
    parsed = [parse_voice(v, heldout=True) for v in voices]
    lines = _sentences(_source(source), "test_2016_flickr")
    plan = _plan("test", lines, sentences, parsed, np.random.default_rng(seed), out)
    return _write(out, {"test": plan}, sample_rate, workers, log)
