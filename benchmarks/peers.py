"""transduce vs fairseq vs CTranslate2 on Multi30k en-de, side by side in one run (issue 25, peers).

Run (a few hundred updates: over an hour on 2 busy cores; the fairseq side environment is created on first use):
    .venv/bin/python benchmarks/peers.py --from ../shared/data/multi30k
Quick check end to end (the models are then barely trained: their BLEU says only that the pipeline works):
    .venv/bin/python benchmarks/peers.py --from ../shared/data/multi30k --updates 60 --limit 200

Steps, each a separate process run with the same niceness and threads, everything under --work:
  1. ``transduce data multi30k --from`` prepares the data once.
  2. Training, --updates updates each, the Transformer-tiny of recipes/multi30k-en-de-transformer.yaml post-LN
     (model.pre_norm=false, Wu et al.'s configuration, as in issue 23): ``transduce train`` in fp32 (and bf16
     where this CPU computes it natively), then fairseq-train with ``side_envs.FAIRSEQ_MT_FLAGS`` on the same
     data encoded with our run's SentencePiece model. Target tokens/s and updates/s: medians over the log
     windows after the first (both toolkits count target tokens with EOS).
  3. Decoding test_2016_flickr with beam 5, the recipe's length penalty (1.4) and limits (1.2 x source + 10),
     64 sentences a batch: our PyTorch model (``Translator``), its CTranslate2 exports (float32, and int8 in the
     compute type this CPU runs it with), and fairseq-generate on the same test set (binarized with the same
     SentencePiece model, detokenized by ``--remove-bpe sentencepiece``, as our SentencePiece decode does).
     Sentences/s over the search alone, model loading excluded and no warm-up call in any of them: ours and
     CTranslate2 include SentencePiece encoding, fairseq-generate reads pre-binarized ids. Detokenized
     sacreBLEU and tokenized lowercased BLEU (the Multi30k convention) against the references.
Prints one table with each process's peak RSS (its own ``wait4`` usage) and every ratio against fairseq.
A step that runs past the --budget wall clock is killed and shown as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from side_envs import FAIRSEQ_MT_FLAGS, create, encode_multi30k, peer_python

REPO = Path(__file__).resolve().parents[1]
MT_RECIPE = REPO / "recipes" / "multi30k-en-de-transformer.yaml"
TEST = "test_2016_flickr"
DECODE = {"len_penalty": 1.4, "max_len_a": 1.2, "max_len_b": 10, "batch_size": 64}
"""The recipe's decode section, given to fairseq-generate in its own flags."""


@dataclass
class Proc:
    """One finished (or killed) child process."""

    log: Path
    wall: float
    rss_mib: float
    timed_out: bool

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Row:
    """One line of the table; ``peer`` is the fairseq row its ratios are taken against."""

    name: str
    proc: Proc | None = None
    values: dict[str, float] = field(default_factory=dict)
    peer: Row | None = None
    note: str = ""


class Runner:
    """Runs child processes niced alike, under one wall-clock budget."""

    def __init__(self, *, nice: int, threads: int, budget_s: float) -> None:
        self.nice, self.threads = nice, threads
        self.deadline = time.perf_counter() + budget_s

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads), **extra}

    def run(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
        """``cmd`` with stdout and stderr into ``log``; its peak RSS from ``os.wait4`` (``nice`` execs it)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        started, timed_out = time.perf_counter(), False
        with log.open("w") as sink:
            child = subprocess.Popen(["nice", "-n", str(self.nice), *cmd], stdout=sink, stderr=subprocess.STDOUT,
                                     env=env or self.env(), cwd=REPO)
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > self.deadline:
                    child.kill()
                    pid, status, usage = os.wait4(child.pid, 0)
                    timed_out = True
                    break
                time.sleep(0.2)
        child.returncode = os.waitstatus_to_exitcode(status)
        proc = Proc(log, time.perf_counter() - started, usage.ru_maxrss / 1024, timed_out)
        if child.returncode and not timed_out:
            raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({child.returncode}):\n{proc.text()[-3000:]}")
        return proc


def prepare_data(runner: Runner, source: Path, work: Path) -> Path:
    data = work / "data"
    if not (data / "train.en").is_file() and not (data / "train.en.gz").is_file():
        runner.run([sys.executable, "-m", "transduce", "data", "multi30k", "--out", str(data), "--from", str(source)],
                   work / "logs" / "data.log")
    return data


def train_ours(runner: Runner, data: Path, out: Path, precision: str, args: argparse.Namespace) -> Row:
    """``transduce train`` of the recipe post-LN; tokens/s and updates/s from its metrics.jsonl."""
    sets = [f"data.dir={data}", "model.pre_norm=false", f"train.precision={precision}",
            f"train.max_updates={args.updates}", f"train.log_every={args.log_every}", "train.eval_every=1000000",
            "train.eval_bleu=false", f"train.threads={args.threads}", "data.num_workers=0", "train.keep_last=1"]
    cmd = [sys.executable, "-m", "transduce", "train", str(MT_RECIPE), "--out", str(out), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    row = Row(f"train transduce {precision}")
    row.proc = runner.run(cmd, out.parent / f"{out.name}.log")
    metrics = out / "metrics.jsonl"
    logs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    windows = [e for e in logs if e["kind"] == "train"][1:] or [e for e in logs if e["kind"] == "train"]
    if windows:
        row.values = {"tok_s": statistics.median(e["tokens_per_s"] for e in windows),
                      "upd_s": statistics.median(args.log_every * e["tokens_per_s"] / e["tokens"] for e in windows),
                      "loss": windows[-1]["loss"]}
    return row


def fairseq_data(runner: Runner, python: Path, data: Path, spm_model: Path, work: Path, limit: int) -> Path:
    """train/valid/test pieces (our SentencePiece model) binarized by fairseq-preprocess with a joined dict."""
    import sentencepiece as spm
    from common import read_pairs

    text = work / "text"
    encode_multi30k(data, spm_model, text)
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    for lang, lines in zip(("en", "de"), read_pairs(data, TEST), strict=True):
        lines = lines[:limit] if limit else lines
        (text / f"test.{lang}").write_text("".join(" ".join(p) + "\n" for p in sp.encode(lines, out_type=str)))
    binarized = work / "bin"
    if not (binarized / "dict.en.txt").is_file():
        runner.run([str(python.parent / "fairseq-preprocess"), "--source-lang", "en", "--target-lang", "de",
                    "--trainpref", str(text / "train"), "--validpref", str(text / "valid"),
                    "--testpref", str(text / "test"), "--joined-dictionary", "--destdir", str(binarized),
                    "--workers", "1"], work / "preprocess.log")
    return binarized


def train_fairseq(runner: Runner, python: Path, binarized: Path, work: Path, args: argparse.Namespace) -> Row:
    """fairseq-train with the flags of benchmarks/side_envs.py, keeping the last checkpoint for decoding."""
    flags = [f for f in FAIRSEQ_MT_FLAGS if f != "--no-save"]
    cmd = [str(python.parent / "fairseq-train"), str(binarized), *flags, "--max-update", str(args.updates),
           "--log-interval", str(args.log_every), "--save-dir", str(work / "checkpoints"),
           "--no-epoch-checkpoints"]
    row = Row("train fairseq fp32")
    row.proc = runner.run(cmd, work / "train.log", runner.env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))
    inner = [json.loads(line[line.index("{"):]) for line in row.proc.text().splitlines()
             if "train_inner" in line and '"wps"' in line]
    windows = inner[1:] or inner
    if windows:
        row.values = {"tok_s": statistics.median(float(e["wps"]) for e in windows),
                      "upd_s": statistics.median(float(e["ups"]) for e in windows), "loss": float(inner[-1]["loss"])}
    return row


def decode_fairseq(runner: Runner, python: Path, binarized: Path, work: Path,
                   args: argparse.Namespace) -> tuple[Row, list[str]]:
    """fairseq-generate beam --beam on the binarized test set; detokenized hypotheses in input order."""
    cmd = [str(python.parent / "fairseq-generate"), str(binarized), "--path", str(work / "checkpoints" /
           "checkpoint_last.pt"), "--gen-subset", "test", "--beam", str(args.beam), "--lenpen",
           str(DECODE["len_penalty"]), "--max-len-a", str(DECODE["max_len_a"]), "--max-len-b",
           str(DECODE["max_len_b"]), "--batch-size", str(DECODE["batch_size"]), "--required-batch-size-multiple",
           "1", "--remove-bpe", "sentencepiece", "--cpu"]
    row = Row(f"decode fairseq beam {args.beam}")
    row.proc = runner.run(cmd, work / "generate.log", runner.env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))
    hyps: dict[int, str] = {}
    for line in row.proc.text().splitlines():
        if line.startswith("D-"):
            key, _, text = line.split("\t", 2) if line.count("\t") >= 2 else (line.split("\t")[0], "", "")
            hyps[int(key[2:])] = text
        elif "Translated" in line and "sentences/s" in line:  # ... in 12.3s (81.30 sentences/s, ...)
            row.values["seconds"] = float(line.split(" in ")[1].split("s (")[0])
    return row, [hyps.get(i, "") for i in range(len(hyps))]


def decode_ours(runner: Runner, model: Path, name: str, src: Path, work: Path, args: argparse.Namespace) -> Row:
    """One ``_decode`` child process of this script: loads ``model`` and translates ``src``."""
    out = work / f"{name.replace(' ', '-')}.de"
    row = Row(f"decode {name}")
    row.proc = runner.run([sys.executable, __file__, "_decode", str(model), str(src), str(out), str(args.beam),
                           str(args.threads)], work / f"{name.replace(' ', '-')}.log")
    result = [json.loads(line) for line in row.proc.text().splitlines() if line.startswith("{")]
    if result:
        row.values["seconds"] = result[-1]["seconds"]
        row.note = result[-1]["compute_type"]
    return row


def decode_worker(model: str, src: str, out: str, beam: str, threads: str) -> None:
    """In a child process: load, translate (timed), write the translations, print the time as JSON."""
    import torch

    from transduce.data.text import read_lines
    from transduce.translate import Translator

    torch.set_num_threads(int(threads))  # CTranslate2 takes PyTorch's thread count at load
    sentences = read_lines(Path(src))
    translator = Translator.load(model)
    started = time.perf_counter()
    hyps = translator.translate(sentences, beam=int(beam))
    seconds = time.perf_counter() - started
    Path(out).write_text("".join(h + "\n" for h in hyps))
    compute_type = getattr(translator.model, "compute_type", "float32 (PyTorch)")
    print(json.dumps({"seconds": seconds, "compute_type": compute_type}))


def export_ct2(runner: Runner, run_dir: Path, work: Path, quantize: str | None) -> Path:
    out = work / f"ct2-{quantize or 'float32'}"
    if not (out / "export.yaml").is_file():
        cmd = [sys.executable, "-m", "transduce", "export", "--model", str(run_dir), "--format", "ctranslate2",
               "--out", str(out)]
        runner.run(cmd + (["--quantize", quantize] if quantize else []), work / f"export-{quantize or 'float32'}.log")
    return out


def score(row: Row, hyps: list[str], refs: list[str], refs_tok: list[str]) -> None:
    """sent/s, detokenized sacreBLEU and tokenized lowercased BLEU of a decoding row (when it finished)."""
    from transduce.metrics.bleu import sacre_scores, tokenized_bleu

    if "seconds" not in row.values or len(hyps) != len(refs):
        return
    row.values["sent_s"] = len(refs) / row.values["seconds"]
    row.values["bleu"] = float(sacre_scores(hyps, refs)["bleu"])
    row.values["tok_bleu"] = tokenized_bleu(hyps, refs_tok, "de")
    words = sum(len(h.split()) for h in hyps) / max(len(hyps), 1)  # sent/s depends on it: say it
    row.note = f"{row.note}{'; ' if row.note else ''}{words:.1f} words/sentence out"


def _cell(row: Row, key: str, fmt: str, ratio: bool) -> str:
    value = row.values.get(key) if key != "rss" else (row.proc.rss_mib if row.proc else None)
    text = format(value, fmt) if value is not None else "-"
    if not ratio:
        return text
    base = row.peer.values.get(key) if row.peer and key != "rss" else (
        row.peer.proc.rss_mib if row.peer and row.peer.proc else None)
    return f"{text} ({value / base:.2f}x)" if value is not None and base else text


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\nMulti30k en-de, {args.updates} updates, {args.threads} threads, nice {args.nice}; "
          f"{TEST} {args.limit or 'all'} sentences, beam {args.beam}. (x) = ratio to the fairseq row of the same "
          "kind, measured in this run.")
    if args.updates < 2000:
        print(f"The models are undertrained at {args.updates} updates (warm-up alone is 2000): BLEU shows the "
              "pipeline works, not the quality of either toolkit.")
    head = f"{'row':<30}{'tgt tok/s':>18}{'updates/s':>16}{'sent/s':>16}{'sacreBLEU':>10}{'tok BLEU':>9}" \
           f"{'loss':>7}{'peak RSS MiB':>20}{'wall s':>8}  note"
    print(head)
    for row in rows:
        timed = " (killed at the budget)" if row.proc and row.proc.timed_out else ""
        print(f"{row.name:<30}{_cell(row, 'tok_s', ',.0f', True):>18}{_cell(row, 'upd_s', '.3f', True):>16}"
              f"{_cell(row, 'sent_s', '.1f', True):>16}{_cell(row, 'bleu', '.2f', False):>10}"
              f"{_cell(row, 'tok_bleu', '.2f', False):>9}{_cell(row, 'loss', '.3f', False):>7}"
              f"{_cell(row, 'rss', ',.0f', True):>20}{(row.proc.wall if row.proc else 0):>8.0f}  {row.note}{timed}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, default=REPO.parent / "shared" / "data" / "multi30k",
                   help="folder with the upstream Multi30k .gz files and tok/ (transduce data multi30k --from)")
    p.add_argument("--work", type=Path, help="output folder (default work/peers/run-DATE-TIME; data in work/peers)")
    p.add_argument("--updates", type=int, default=300, help="training updates in each toolkit (e.g. 60 to check)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help=f"first N sentences of {TEST} only (0 = all)")
    p.add_argument("--nice", type=int, default=5, help="niceness of every child process")
    p.add_argument("--budget", type=float, default=4 * 3600, help="wall-clock seconds for the whole run")
    p.add_argument("--no-bf16", action="store_true", help="skip our bf16 training row even where bf16 is native")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import torch
    from common import machine_line

    from transduce.train.precision import detect_hardware, native_bf16

    print(machine_line(args.threads), flush=True)
    runner = Runner(nice=args.nice, threads=args.threads, budget_s=args.budget)
    python = peer_python("fairseq") or create("fairseq")
    root = REPO / "work" / "peers"
    work = args.work or root / time.strftime("run-%Y%m%d-%H%M%S")
    data = prepare_data(runner, args.source, root)
    unit = "" if args.no_bf16 else native_bf16(detect_hardware(torch.device("cpu")))
    bf16 = "skipped (--no-bf16)" if args.no_bf16 else f"native bf16: {unit or 'none (no bf16 row)'}"
    print(f"work {work}; {bf16}", flush=True)

    ours = train_ours(runner, data, work / "transduce-fp32", "fp32", args)
    theirs = train_fairseq_after(runner, python, data, work, args, ours)
    rows = [theirs, ours]
    if unit:
        rows.append(train_ours(runner, data, work / "transduce-bf16", "bf16", args))
    for row in rows[1:]:
        row.peer = theirs
    rows += decode_all(runner, python, data, work, args)
    print_table(rows, args)


def train_fairseq_after(runner: Runner, python: Path, data: Path, work: Path, args: argparse.Namespace,
                        ours: Row) -> Row:
    """fairseq-train on the data encoded with ``ours``' SentencePiece model."""
    print(f"[{ours.name}] {ours.values}", flush=True)
    binarized = fairseq_data(runner, python, data, work / "transduce-fp32" / "spm.model", work / "fairseq",
                             args.limit)
    theirs = train_fairseq(runner, python, binarized, work / "fairseq", args)
    print(f"[{theirs.name}] {theirs.values}", flush=True)
    return theirs


def decode_all(runner: Runner, python: Path, data: Path, work: Path, args: argparse.Namespace) -> list[Row]:
    """The four decoding rows, scored; ratios against fairseq-generate."""
    from common import read_pairs, text_file

    src, refs = (lines[: args.limit] if args.limit else lines for lines in read_pairs(data, TEST))
    refs_tok = text_file(data / "tok", f"{TEST}.lc.norm.tok.de").read_text().splitlines()[: len(refs)]
    (work / "test.en").write_text("".join(s + "\n" for s in src))
    fs, fs_hyps = decode_fairseq(runner, python, work / "fairseq" / "bin", work / "fairseq", args)
    score(fs, fs_hyps, refs, refs_tok)
    run_dir = work / "transduce-fp32"
    models = {"transduce pytorch": run_dir, "ct2 float32": export_ct2(runner, run_dir, work, None),
              "ct2 int8": export_ct2(runner, run_dir, work, "int8")}
    rows = [fs]
    for name, model in models.items():
        row = decode_ours(runner, model, name, work / "test.en", work, args)
        out = work / f"{name.replace(' ', '-')}.de"
        score(row, out.read_text().splitlines() if out.is_file() else [], refs, refs_tok)
        row.peer = fs
        rows.append(row)
        print(f"[{row.name}] {row.values}", flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["_decode"]:
        decode_worker(*sys.argv[2:7])
    else:
        main()
