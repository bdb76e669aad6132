"""A stand-in for the captions speech data (``transduce data captions``) when the TTS voices are not installed:
Multi30k English captions as transcripts, each with a WAV of noise as long as a TTS voice would take to speak
it (14 characters per second, 2-6 s). Good for training-speed measurements only (the model's cost does not
depend on what the audio says); nothing can be learned from it.

    .venv/bin/python benchmarks/synthetic_captions.py --out /tmp/captions --utterances 2000
writes /tmp/captions/{train,dev}.jsonl and their WAVs (16 kHz, 16-bit).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import soundfile

from transduce.data.manifest import Utterance, write_manifest
from transduce.data.text import read_lines

CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k" / "train.en.gz"
CHARS_PER_SECOND = 14.0


def write_synthetic_captions(out: Path, utterances: int, *, dev: int = 50, seed: int = 0,
                             captions: Path = CAPTIONS, sample_rate: int = 16000) -> Path:
    """``utterances`` training and ``dev`` development utterances under ``out``; returns ``out``."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    texts = rng.sample(read_lines(captions), utterances + dev)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    utts = []
    for i, text in enumerate(texts):
        duration = min(max(len(text) / CHARS_PER_SECOND, 2.0), 6.0)
        samples = (noise.standard_normal(int(duration * sample_rate)) * 3000).astype(np.int16)
        path = out / "wav" / f"{i:06d}.wav"
        soundfile.write(path, samples, sample_rate, subtype="PCM_16")
        utts.append(Utterance(id=f"synth{i:06d}", audio=path, duration=len(samples) / sample_rate,
                              text=text.strip(), speaker=f"voice{i % 7}"))
    write_manifest(out / "train.jsonl", utts[:utterances])
    write_manifest(out / "dev.jsonl", utts[utterances:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--utterances", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_synthetic_captions(args.out, args.utterances, seed=args.seed)
    print(f"{args.out}: {args.utterances} training utterances (train.jsonl), 50 dev (dev.jsonl)")


if __name__ == "__main__":
    main()
