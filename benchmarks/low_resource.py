"""Low-resource transfer (issue 27): English -> Czech text translation on 1k, 3k and 10k pairs of Multi30k train
(fixed nested subsets, ``transduce.data.low_resource``), by three methods, scored on test_2016_flickr (sacreBLEU):

- scratch: the translation recipe trained on the pairs alone (its vocabulary sized to the data);
- bt: back-translation: a cs -> en model trained on the same pairs translates the Czech side of the unused pairs
  (``--bt-limit`` sentences) into synthetic English; en -> cs trains on the real and synthetic pairs;
- finetune: the unified model trained without Czech pairs (``--unified DIR``, trained with
  ``--set "data.without=[st:cs,mt:cs]"``; it keeps the Czech tag) fine-tuned on the pairs (text translation only).

Prints one row per (method, pairs), writes OUT/results.json and the plot OUT/low_resource.png (BLEU against pairs).

    transduce train recipes/multi30k-unified.yaml --out work/runs/unified-nocs --set "data.without=[st:cs,mt:cs]"
    .venv/bin/python benchmarks/low_resource.py --source ../shared/data/multi30k --out work/low-resource \\
        --unified work/runs/unified-nocs [--set train.max_updates=2000] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import REPO

from transduce.cli.config import load_recipe
from transduce.data.low_resource import back_translate, write_subsets
from transduce.data.text import read_lines
from transduce.metrics.bleu import sacre_scores

RECIPE = REPO / "recipes" / "multi30k-en-de-transformer.yaml"
METHODS = ("scratch", "bt", "finetune")


def vocab(pairs: int) -> int:
    """The subword vocabulary of a model trained on ``pairs`` sentence pairs (small data, small vocabulary)."""
    return max(500, min(8000, pairs // 2))


def plans(folder: Path, pairs: int, out: Path, args: argparse.Namespace) -> dict[str, list[tuple[str, list[str]]]]:
    """method -> the (recipe, overrides) of its training runs, in order (bt: cs -> en first)."""
    text = [f"data.dir={folder}", f"data.vocab_size={vocab(pairs)}", *args.overrides]
    runs: dict[str, list[tuple[str, list[str]]]] = {
        "scratch": [(str(RECIPE), [*text, "data.tgt_lang=cs"])],
        "bt": [(str(RECIPE), [*text, "data.src_lang=cs", "data.tgt_lang=en"]),
               (str(RECIPE), [*text, "data.tgt_lang=cs", "data.train=train,train.bt"])]}
    if args.unified:
        source = Path(args.unified)
        config = source / "model" / "config.yaml" if (source / "model").is_dir() else source / "config.yaml"
        runs["finetune"] = [(str(config), [f"train.init_from={source}", "data.tasks=[mt]", f"data.text_dir={folder}",
                                           "data.without=[mt:de,mt:fr]", "data.valid_limit=0", *args.overrides])]
    return runs


def score(run: Path, folder: Path) -> float:
    """sacreBLEU of ``run`` (a translation or unified model) on the subset's test_2016_flickr en -> cs."""
    from transduce.tasks import load
    from transduce.unified import Unified

    model = load(run)
    sources = read_lines(folder / "test_2016_flickr.en")
    hyps = model.translate(sources, "cs") if isinstance(model, Unified) else model.translate(sources)
    return float(sacre_scores(hyps, read_lines(folder / "test_2016_flickr.cs"))["bleu"])


def run_method(method: str, steps: list[tuple[str, list[str]]], folder: Path, run: Path,
               args: argparse.Namespace) -> None:
    """Train the method's runs (resuming what is there); bt translates the monolingual Czech between its two."""
    from transduce.train.trainer import Trainer

    for k, (recipe, overrides) in enumerate(steps):
        if method == "bt" and k == 1 and not (folder / "train.bt.cs").is_file():
            from transduce.tasks import load

            reverse = load(run.parent / f"{run.name}-cs-en")
            count = back_translate(folder, reverse.translate, limit=args.bt_limit)
            print(f"{folder.name}: {count} back-translated pairs", flush=True)
        target = run.parent / f"{run.name}-cs-en" if method == "bt" and k == 0 else run
        if not (target / "model").is_dir():
            cfg = load_recipe(recipe, overrides)
            Trainer(cfg, target, log=lambda _: None, show_progress=False).fit(resume=(target / "checkpoints").is_dir())


def plot(results: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, rows in results.items():
        sizes = sorted(rows)
        ax.plot(sizes, [rows[n] for n in sizes], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("en-cs training pairs")
    ax.set_ylabel("BLEU, test_2016_flickr cs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="Multi30k folder with train/val/test .en and .cs")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sizes", default="1000,3000,10000", help="comma-separated pair counts")
    parser.add_argument("--seed", type=int, default=1, help="seed of the subsets")
    parser.add_argument("--unified", help="unified model folder trained without Czech pairs (else no finetune)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--bt-limit", type=int, default=10000, help="Czech sentences back-translated per subset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    parser.add_argument("--dry-run", action="store_true", help="write the subsets and print the plans only")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    folders = write_subsets(args.source, args.out / "data", sizes=sizes, seed=args.seed)
    results: dict[str, dict[int, float]] = {}
    for folder, pairs in zip(folders, sizes, strict=True):
        for method, steps in plans(folder, pairs, args.out, args).items():
            if method not in args.methods.split(","):
                continue
            if args.dry_run:
                print(f"{method} {pairs}: " + " | ".join(f"{r} {' '.join(o)}" for r, o in steps))
                continue
            started = time.perf_counter()
            run = args.out / f"{method}-{pairs}"
            run_method(method, steps, folder, run, args)
            results.setdefault(method, {})[pairs] = bleu = score(run, folder)
            seconds = time.perf_counter() - started
            print(f"{method:9s} {pairs:6d} pairs  BLEU {bleu:6.2f}  ({seconds:.0f} s)", flush=True)
    if not args.dry_run:
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.out / "low_resource.png")


if __name__ == "__main__":
    main()
