"""Length generalization of position types (issue 28): train the Multi30k recipe briefly once per
``model.positions`` value, then translate inputs made of 1, 2, 4 and 8 consecutive test_2016_flickr sentences
joined by a space (references joined the same way) and print tokenized-lowercased BLEU per input length and
type, with a plot. All types share one tokenizer (``--spm``, the bundled model's by default) and one schedule.

Short training on a CPU: the numbers compare the types after ``--updates`` updates; they are not converged
models. Run it nice'd in the background, logging to a file:

    nice -n 10 .venv/bin/python benchmarks/length_generalization.py --updates 600 --out work/lengthgen \
        > work/lengthgen.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "multi30k-en-de-transformer.yaml"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "work" / "data" / "multi30k", help="Multi30k folder")
    p.add_argument("--spm", type=Path, default=ROOT / "models" / "multi30k-en-de" / "spm.model",
                   help="the joint SentencePiece model every run uses")
    p.add_argument("--out", type=Path, default=ROOT / "work" / "lengthgen", help="runs, models, results")
    p.add_argument("--positions", nargs="+", default=["sinusoidal", "rope", "learned", "shaw"])
    p.add_argument("--updates", type=int, default=600, help="training updates per type")
    p.add_argument("--warmup", type=int, default=300, help="learning-rate warmup updates")
    p.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 4, 8], help="sentences joined per input")
    p.add_argument("--sentences", type=int, default=400, help="test_2016_flickr sentences used (from the first)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="further recipe overrides for every type, e.g. --set train.max_tokens=2048")
    return p.parse_args()


def train(positions: str, args: argparse.Namespace) -> Path:
    """Train one type -> the model folder the trainer writes (its last checkpoint); reused when it exists."""
    from transduce.cli.main import main

    run = args.out / "runs" / positions
    if (run / "model" / "config.yaml").is_file():
        return run / "model"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.spm, run / "spm.model")  # the trainer reuses a tokenizer found in the run folder
    overrides = [f"data.dir={args.data}", f"model.positions={positions}", f"train.max_updates={args.updates}",
                 f"optim.warmup={args.warmup}", f"train.eval_every={args.updates}", "train.keep_last=1",
                 "train.average_last=1", f"train.threads={args.threads}", "train.log_every=25", *args.overrides]
    resume = ["--resume"] if any((run / "checkpoints").glob("step_*.pt")) else []  # an interrupted run goes on
    start = time.perf_counter()
    code = main(["train", str(RECIPE), "--out", str(run), "--no-progress", *resume,
                 *[arg for o in overrides for arg in ("--set", o)]])
    if code != 0:
        raise SystemExit(f"training {positions} failed with exit code {code}")
    if not (run / "checkpoints" / f"step_{args.updates}.pt").is_file():  # SIGTERM stops early with exit code 0
        raise SystemExit(f"training {positions} stopped before update {args.updates}; rerun to resume it")
    print(f"{positions}: trained {args.updates} updates in {time.perf_counter() - start:.0f} s", flush=True)
    return run / "model"


def joined(lines: list[str], n: int) -> list[str]:
    """Consecutive groups of ``n`` lines joined by a space (a trailing partial group dropped)."""
    return [" ".join(lines[i : i + n]) for i in range(0, len(lines) - n + 1, n)]


def evaluate(model: Path, args: argparse.Namespace) -> dict[int, float]:
    """BLEU (tokenized, lowercased, as docs/results) per joined length, greedy search."""
    from transduce.metrics.bleu import mmt_tokenize, tokenized_bleu
    from transduce.translate import Translator

    translator = Translator.load(model, ensemble=(), rerank=())
    src = (args.data / "test_2016_flickr.en").read_text().splitlines()[: args.sentences]
    ref = (args.data / "tok" / "test_2016_flickr.lc.norm.tok.de").read_text().splitlines()[: args.sentences]
    scores = {}
    for n in args.lengths:
        hyps = translator.translate(joined(src, n), beam=1, batch_size=16)
        scores[n] = tokenized_bleu(hyps, joined(ref, n), "de")
        words = sum(len(mmt_tokenize(h, "de").split()) for h in hyps) / sum(len(r.split()) for r in joined(ref, n))
        print(f"  {model.parent.name} x{n}: BLEU {scores[n]}, output/reference words {words:.2f}", flush=True)
    return scores


def plot(results: dict[str, dict[int, float]], path: Path, updates: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for positions, scores in results.items():
        ax.plot(list(scores), list(scores.values()), marker="o", label=positions)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("test_2016 sentences joined per input")
    ax.set_ylabel("BLEU (tokenized, lowercased)")
    ax.set_title(f"Multi30k en-de, {updates} updates per type (short training)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for positions in args.positions:
        results[positions] = evaluate(train(positions, args), args)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nBLEU by sentences joined per input ({args.updates} updates per type, first {args.sentences} "
          "test_2016_flickr sentences, greedy):")
    print("positions   " + "".join(f"{'x' + str(n):>8}" for n in args.lengths))
    for positions, scores in results.items():
        print(f"{positions:<12}" + "".join(f"{scores[n]:>8.2f}" for n in args.lengths))
    try:
        plot(results, args.out / "length_generalization.png", args.updates)
    except ImportError:
        print("matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
