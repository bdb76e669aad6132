"""Training speed of the unified model (recipes/multi30k-unified.yaml) against the single-task speech translation
model (recipes/multi30k-st-conformer-de.yaml), both measured in this run by the real trainer's update.

Run (a few minutes on 1 thread; a 500-utterance subset keeps tokenizer and CMVN set-up short):
    .venv/bin/python benchmarks/unified_speed.py --train dev.jsonl --updates 8
Extra ``--set``-style overrides per row: --unified-set train.max_tokens=4000 (e.g. the old batch size).

Per row: updates/s, target tokens/s and audio seconds/s over ``--updates`` updates after one warm-up update, the
mean batch composition (speech frames, text source tokens, target tokens per update), and the unified row's
ratios to the speech translation row. Speech frames are 10 ms; the unified recipe's train.max_tokens counts
encoder positions (frames / subsampling, or text pieces), the speech translation recipe's counts frames.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import REPO, machine_line

from transduce.cli.config import load_recipe
from transduce.train.trainer import Trainer

UNIFIED = REPO / "recipes" / "multi30k-unified.yaml"
ST = REPO / "recipes" / "multi30k-st-conformer-de.yaml"


@dataclass
class Speed:
    name: str
    seconds: float
    updates: int
    tokens: int
    frames: int
    text_tokens: int

    def line(self) -> str:
        u = self.updates
        return (f"{self.name:8s} {u / self.seconds:7.3f} upd/s {self.tokens / self.seconds:8.0f} tgt tok/s "
                f"{self.frames / 100 / self.seconds:7.1f} audio s/s | per update: {self.frames / u:7.0f} frames, "
                f"{self.text_tokens / u:6.0f} source pieces, {self.tokens / u:6.0f} target tokens")


def _composition(batch: object) -> tuple[int, int]:
    """(speech frames, text source pieces) of one batch (unified: ``feat_lens`` and ``src_lens``)."""
    frames = int(batch.feat_lens.sum())
    src_lens = getattr(batch, "src_lens", None)
    return frames, 0 if src_lens is None else int(src_lens.sum())


def measure(name: str, recipe: Path, overrides: list[str], updates: int, run_dir: Path) -> Speed:
    """One warm-up update, then ``updates`` timed ones of the real trainer (threads as set by the caller)."""
    cfg = load_recipe(recipe, overrides)
    trainer = Trainer(cfg, run_dir, log=lambda _: None, show_progress=False)
    torch.set_num_threads(cfg.train.threads)
    groups = trainer._groups()
    trainer._update(next(groups))
    seconds, tokens, frames, text = 0.0, 0, 0, 0
    for _ in range(updates):
        group = next(groups)  # collated before the clock starts: loading is measured apart (data.num_workers)
        started = time.perf_counter()
        trainer._update(group)
        seconds += time.perf_counter() - started
        for batch in group:
            f, s = _composition(batch)
            tokens, frames, text = tokens + batch.num_tokens, frames + f, text + s
    return Speed(name, seconds, updates, tokens, frames, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="dev.jsonl", help="speech manifest in work/data/st for both rows")
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unified-set", nargs="*", default=[], help="extra overrides of the unified row")
    parser.add_argument("--st-set", nargs="*", default=[], help="extra overrides of the speech translation row")
    args = parser.parse_args()
    common = [f"data.train={args.train}", "data.valid=dev100.jsonl", f"train.threads={args.threads}"]
    st_init = ['model.init_encoder_from=""']  # the speech encoder's folder is a local run; random start is as fast
    print(machine_line(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        st = measure("st", ST, [*common, *st_init, "train.max_tokens=8000", *args.st_set], args.updates,
                     Path(tmp) / "st")
        unified = measure("unified", UNIFIED, [*common, *args.unified_set], args.updates, Path(tmp) / "unified")
    for row in (st, unified):
        print(row.line())
    print(f"unified / st: update time x{st.updates / st.seconds / (unified.updates / unified.seconds):.2f}, "
          f"target tokens/s x{unified.tokens * st.seconds / (st.tokens * unified.seconds):.2f}, "
          f"audio s/s x{unified.frames * st.seconds / max(st.frames * unified.seconds, 1e-9):.2f}")


if __name__ == "__main__":
    main()
