"""Toy copy/reverse task: random letter sequences, the target is the source (or reversed)."""

from __future__ import annotations

import random
from pathlib import Path

LETTERS = "abcdefghijklmnopqrst"


def toy_pairs(n: int, *, task: str, seed: int, min_len: int = 3, max_len: int = 12) -> list[tuple[str, str]]:
    if task not in ("copy", "reverse"):
        raise ValueError(f"unknown toy task {task!r}; choose copy or reverse")
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        seq = [rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len))]
        tgt = seq if task == "copy" else seq[::-1]
        pairs.append((" ".join(seq), " ".join(tgt)))
    return pairs


def write_toy(out: str | Path, *, task: str = "reverse", train: int = 5000, valid: int = 200,
              test: int = 200, seed: int = 1) -> Path:
    """Write {train,val,test}.{src,tgt} for the toy task into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for offset, (split, n) in enumerate([("train", train), ("val", valid), ("test", test)]):
        pairs = toy_pairs(n, task=task, seed=seed * 1000 + offset)
        (out / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs))
        (out / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs))
    return out
