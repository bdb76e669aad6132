"""A two-modality toy for the unified model: tone "speech" (``data/tones.py``) and the same letters as text, both
translated into the toy languages of ``tones.SYMBOLS`` (de: symbols reversed, fr: in order); the speech's
transcript is its letters. Learnable in a minute on a CPU: a check that one model learns both modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transduce.data.tones import SYMBOLS, TONES, tone_translation, write_tone_translations


def write_tone_text(out: str | Path, *, train: int = 300, valid: int = 40, max_letters: int = 5, seed: int = 1
                    ) -> Path:
    """``out/speech/{train,dev}.jsonl`` (``write_tone_translations``) and ``out/text/{train,val}.{en,de,fr}``:
    letters ("a b d", space-separated: each a word) drawn with another seed, and their translations."""
    out = Path(out)
    write_tone_translations(out / "speech", train=train, valid=valid, max_letters=max_letters, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    for split, count in (("train", train), ("val", valid)):
        lines = ["".join(rng.choice(list(TONES), size=int(rng.integers(1, max_letters + 1)))) for _ in range(count)]
        (out / "text").mkdir(parents=True, exist_ok=True)
        (out / "text" / f"{split}.en").write_text("".join(f"{' '.join(line)}\n" for line in lines), encoding="utf-8")
        for lang in SYMBOLS:
            (out / "text" / f"{split}.{lang}").write_text(
                "".join(f"{tone_translation(line, lang)}\n" for line in lines), encoding="utf-8")
    return out
