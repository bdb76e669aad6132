"""Train translation variants side by side under one wall-clock deadline, then for each: average its
last checkpoints, choose (checkpoints averaged x length penalty) on val, and score test once.

This produced the "Attentional RNNs against the Transformer" tables of docs/results/mt-multi30k.md (on one GPU,
where the runs share the device; on 2 CPU cores run one or two variants at a time):

    python benchmarks/mt_variants.py --data work/data/multi30k --out work/sweeps/long --seconds 450 \\
        --preset long
    python benchmarks/mt_variants.py --data work/data/multi30k --out work/sweeps/short --seconds 420 \\
        --preset short --grid-transformer 5x1.0,5x1.4,10x1.0,10x1.4 --grid-rnn 3x1.0,3x1.4,6x1.0,6x1.4

A variant is NAME=RECIPE[,KEY=VALUE...] (the same KEY=VALUE as ``transduce train --set``); runs stop
at ``--seconds`` with SIGTERM, which checkpoints and exits cleanly. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TR, RN = "recipes/multi30k-en-de-transformer.yaml", "recipes/multi30k-en-de-rnn.yaml"
PRESETS = {
    "long": [
        f"t-v8k={TR},train.eval_every=400",
        f"t-v6k={TR},train.eval_every=400,data.vocab_size=6000",
        f"r-add={RN},train.eval_every=400",
        f"r-add-covtu={RN},train.eval_every=400,model.coverage=true",
    ],
    "short": [
        f"t-pre={TR},train.eval_every=300",
        f"t-post={TR},train.eval_every=300,model.pre_norm=false",
        f"t-pre-drop={TR},train.eval_every=300,model.attention_dropout=0.1,model.activation_dropout=0.1",
        f"t-post-drop={TR},train.eval_every=300,model.pre_norm=false,model.attention_dropout=0.1,"
        "model.activation_dropout=0.1",
        f"t-pre-8k={TR},train.eval_every=200,train.max_tokens=8192",
        f"t-pre-v6k={TR},train.eval_every=300,data.vocab_size=6000",
        f"r-add={RN},train.eval_every=400",
        f"r-add-cov={RN},train.eval_every=400,model.coverage=true,model.coverage_loss_weight=1.0",
        f"r-gen={RN},train.eval_every=400,model.attention=general",
        f"r-dot={RN},train.eval_every=400,model.attention=dot",
        f"r-loc={RN},train.eval_every=400,model.attention=location",
    ],
}


@dataclass
class Variant:
    name: str
    recipe: str
    overrides: list[str]
    rnn: bool
    rows: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)


def parse_variant(spec: str) -> Variant:
    """'NAME=RECIPE[,KEY=VALUE...]' -> Variant (the recipe's task tells RNN from Transformer)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"mt_variants: bad --variant {spec!r}: expected NAME=RECIPE[,KEY=VALUE...]")
    recipe, *overrides = rest.split(",")
    path = Path(recipe) if Path(recipe).is_absolute() else ROOT / recipe
    if not path.is_file():
        raise SystemExit(f"mt_variants: variant {name}: no recipe {recipe}")
    task = (yaml.safe_load(path.read_text()) or {}).get("task", "translation")
    return Variant(name, str(path), overrides, rnn=task == "rnn_translation")


def parse_grid(text: str) -> list[tuple[int, float]]:
    """'5x1.4,10x1.0' -> [(5, 1.4), (10, 1.0)]: checkpoints averaged x length penalty."""
    try:
        return [(int(last), float(lp)) for last, lp in (item.split("x") for item in text.split(","))]
    except ValueError:
        raise SystemExit(f"mt_variants: bad grid {text!r}: expected LASTxLP[,LASTxLP...], e.g. 5x1.4") from None


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "transduce.cli.main", *args]


def train_all(variants: list[Variant], data: str, out: Path, seconds: float, threads: int) -> None:
    """Start every run, SIGTERM the ones still going at the deadline, wait for their checkpoints."""
    procs = []
    for v in variants:
        sets = [f"data.dir={data}", f"train.threads={threads}", "train.keep_last=12", *v.overrides]
        cmd = cli("train", v.recipe, "--out", str(out / v.name), "--no-progress")
        for s in sets:
            cmd += ["--set", s]
        log = open(out / f"{v.name}.log", "w")  # noqa: SIM115 (closed when the process ends)
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(p.poll() is None for p, _ in procs):
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for (p, log), v in zip(procs, variants, strict=True):
        if p.wait() != 0:
            print(f"mt_variants: {v.name} exited {p.returncode}; see {out / v.name}.log", file=sys.stderr)
        log.close()


def evaluate(model: Path, data: str, split: str, lp: float) -> dict:
    r = subprocess.run(cli("evaluate", "--model", str(model), "--src", f"{data}/{split}.en.gz",
                           "--ref", f"{data}/{split}.de.gz", "--beam", "5", "--len-penalty", str(lp)),
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"evaluate {model} on {split}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


def score(v: Variant, grid: list[tuple[int, float]], data: str, out: Path) -> None:
    """Average, choose on val, score test once; fills v.rows (the val grid) and v.result."""
    run = out / v.name
    for last in sorted({last for last, _ in grid}):
        model = out / f"{v.name}-avg{last}"
        r = subprocess.run(cli("average", str(run), "--last", str(last), "--out", str(model)),
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            raise RuntimeError(f"average {run}: {r.stderr.strip()[-300:]}")
        for lp in [lp for n, lp in grid if n == last]:
            v.rows.append({"model": model.name, "last": last, "lp": lp,
                           "val": evaluate(model, data, "val", lp)["bleu_tok_lc"]})
    best = max(v.rows, key=lambda row: row["val"])
    model = out / best["model"]
    test = evaluate(model, data, "test_2016_flickr", best["lp"])
    card = json.loads((model / "card.json").read_text())
    params = sum(t.numel() for t in load_file(model / "model.safetensors").values())  # tied tensors stored once
    v.result = {"name": v.name, "params": params, "updates": card.get("updates"),
                "train_seconds": card.get("train_seconds"), "last": best["last"], "lp": best["lp"],
                "val": best["val"], "test": test["bleu_tok_lc"], "test_sacrebleu": test["bleu"],
                "test_chrf": test["chrf"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder from `transduce data multi30k` (*.en.gz, *.de.gz)")
    ap.add_argument("--out", required=True, help="folder for the runs, averaged models and results.jsonl")
    ap.add_argument("--seconds", type=float, required=True, help="wall-clock training deadline for all runs")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a named list of variants")
    ap.add_argument("--variant", action="append", default=[], help="NAME=RECIPE[,KEY=VALUE...] (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=4, help="evaluations run at once")
    ap.add_argument("--grid-transformer", default="5x1.4,10x1.4,10x1.0", help="LASTxLP choices tried on val")
    ap.add_argument("--grid-rnn", default="3x1.0,6x1.0", help="LASTxLP choices tried on val")
    args = ap.parse_args(argv)
    variants = [parse_variant(s) for s in PRESETS.get(args.preset or "", []) + args.variant]
    if not variants:
        raise SystemExit("mt_variants: give --preset or --variant")
    grids = {False: parse_grid(args.grid_transformer), True: parse_grid(args.grid_rnn)}
    data = str(Path(args.data).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    train_all(variants, data, out, args.seconds, args.threads)
    print(f"trained {len(variants)} variants side by side in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    with ThreadPoolExecutor(args.jobs) as pool:
        errors = list(pool.map(lambda v: _try(score, v, grids[v.rnn], data, out), variants))
    with open(out / "results.jsonl", "w") as f:
        for v, err in zip(variants, errors, strict=True):
            f.write(json.dumps({**v.result, "grid": v.rows, "error": err}) + "\n")
    print("| variant | parameters | updates | train s | avg last | lp | val BLEU | test BLEU | sacreBLEU | chrF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, err in zip(variants, errors, strict=True):
        r = v.result
        if err:
            print(f"| {v.name} | failed: {err} |")
            continue
        print(f"| {v.name} | {r['params'] / 1e6:.2f}M | {r['updates']} | {r['train_seconds']} | {r['last']} | "
              f"{r['lp']} | {r['val']:.2f} | **{r['test']:.2f}** | {r['test_sacrebleu']:.2f} | {r['test_chrf']:.2f} |")
    return 1 if any(errors) else 0


def _try(fn, *args) -> str | None:
    try:
        fn(*args)
    except Exception as err:  # one failed variant must not hide the others' results
        return str(err)
    return None


if __name__ == "__main__":
    sys.exit(main())
