"""A synthetic speech-like task for smoke tests: each letter is a tone burst, letters are
separated by short silences, the transcript is the letters. Learnable in seconds on a CPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from transduce.data.audio import write_wav
from transduce.data.manifest import Utterance, write_manifest

TONES = {"a": 400.0, "b": 900.0, "c": 1700.0, "d": 2900.0}
"""Letter -> tone frequency (Hz)."""


def tone_utterance(letters: str, rng: np.random.Generator, sample_rate: int = 16000) -> torch.Tensor:
    """1-D waveform: 0.05-1 s of leading silence (so models also learn silence, as streaming segments
    start with it), then for each letter a 120-200 ms tone (random phase and level), 40-120 ms gaps."""
    pieces = [np.zeros(int(sample_rate * rng.uniform(0.05, 1.0)))]
    for letter in letters:
        n = int(sample_rate * rng.uniform(0.12, 0.2))
        t = np.arange(n) / sample_rate
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades
        phase = rng.uniform(0, 2 * math.pi)
        pieces.append(rng.uniform(0.2, 0.6) * envelope * np.sin(2 * math.pi * TONES[letter] * t + phase))
        pieces.append(np.zeros(int(sample_rate * rng.uniform(0.04, 0.12))))
    wave = np.concatenate(pieces)
    wave += rng.normal(0.0, 0.003, wave.shape)  # a little noise floor
    return torch.from_numpy(wave.astype(np.float32))


def write_tones(out: str | Path, *, train: int = 300, valid: int = 40, max_letters: int = 5, seed: int = 1,
                sample_rate: int = 16000) -> Path:
    """Write ``out/{train,dev}.jsonl`` and their wavs; speakers are split names (no voices here)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("dev", valid)):
        utts = []
        for i in range(count):
            letters = "".join(rng.choice(list(TONES), size=int(rng.integers(1, max_letters + 1))))
            wave = tone_utterance(letters, rng, sample_rate)
            path = out / "audio" / split / f"{split}-{i:05d}.wav"
            write_wav(path, wave, sample_rate)
            utts.append(Utterance(id=f"{split}-{i:05d}", audio=path.resolve(), duration=wave.numel() / sample_rate,
                                  text=letters, speaker=split))
        write_manifest(out / f"{split}.jsonl", utts)
    return out


SYMBOLS = {"de": "wxyz", "fr": "ponm"}
"""Toy target languages: each letter's symbol (tone a -> symbols[0], ...)."""


def tone_translation(letters: str, lang: str) -> str:
    """The toy "translation" of a tone transcript: de = its letters' symbols in reverse order, fr = in order,
    space-separated ("abd" -> de "z x w", fr "p o m")."""
    symbols = [SYMBOLS[lang]["abcd".index(c)] for c in letters]
    return " ".join(reversed(symbols) if lang == "de" else symbols)


def write_tone_translations(out: str | Path, *, train: int = 300, valid: int = 40, max_letters: int = 5,
                            seed: int = 1) -> Path:
    """``write_tones`` plus a "translation" per line into the toy languages of ``SYMBOLS`` (a speech translation
    manifest as ``transduce data speech-translation`` writes, for smoke tests)."""
    import json

    out = write_tones(out, train=train, valid=valid, max_letters=max_letters, seed=seed)
    for split in ("train", "dev"):
        path = out / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for row in rows:
            row["translation"] = {lang: tone_translation(row["text"], lang) for lang in SYMBOLS}
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return out
