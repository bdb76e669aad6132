"""The unified model against single-task models of the same size (issue 27's table): ASR WER, speech
translation BLEU and text translation BLEU per language, parameters and decode speed, every model decoded with
its own search settings on the same inputs in one run.

Run (the numbers in docs/unified.md):
    .venv/bin/python benchmarks/unified_table.py --model work/runs/u-all --model work/runs/u-asr \
        --model work/runs/u-st --model work/runs/u-mt --manifest work/data/st/dev.jsonl \
        --text ../shared/data/multi30k --split val --json work/unified-table.json

Each --model is a unified model folder; it is scored on every job it was trained for (data.tasks x data.langs):
asr = WER (jiwer, the manifest's normalized transcripts), st:xx = sacreBLEU of its speech into xx, mt:xx =
sacreBLEU of --split's English text into xx. Parameters count what the model's tasks use (a front end and
adapter of an input no task reads are left out). Speed: real-time factor for speech (decode seconds per audio
second), sentences per second for text, one thread. The last lines compare the first model with the best other
model on each job and the first model's size with the sum of the others'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import machine_line, text_file

from transduce.data.speech_translation import read_st_manifest
from transduce.data.text import read_lines
from transduce.metrics.bleu import sacre_scores
from transduce.metrics.wer import wer
from transduce.unified import JOBS, Unified


def used_parameters(m: Unified) -> int:
    """Parameters of the model without the modalities (front end + adapter) that none of its tasks reads."""
    unused = {name for name in m.inputs if all(JOBS[job][0] != name for job in m.jobs)}
    return sum(p.numel() for name, p in m.model.named_parameters()
               if not any(name.startswith(f"modalities.{u}.") for u in unused))


def jobs_of(m: Unified) -> list[str]:
    """asr, st:xx, mt:xx for what the model was trained on."""
    langs = list(m.config.data.langs)
    out = []
    for job in m.jobs:
        out += ["asr"] if job == "asr" else [f"{job}:{lang}" for lang in langs] if job in ("st", "mt") else []
    return out


def score_job(m: Unified, job: str, speech: list, text: dict[str, list[str]]) -> dict[str, float]:
    """{"score": WER or BLEU, "speed": RTF or sentences/s} of one job."""
    kind, _, lang = job.partition(":")
    start = time.perf_counter()
    if kind == "asr":
        hyps = m.transcribe([u.utt.audio for u in speech])
    elif kind == "st":
        hyps = m.translate_audio([u.utt.audio for u in speech], lang)
    else:
        hyps = m.translate(text["en"], lang)
    seconds = time.perf_counter() - start
    if kind == "mt":
        return {"score": float(sacre_scores(hyps, text[lang])["bleu"]), "speed": len(hyps) / seconds}
    audio = sum(u.utt.duration for u in speech)
    if kind == "asr":
        return {"score": wer(hyps, [u.utt.text for u in speech]), "speed": seconds / audio}  # percent
    return {"score": float(sacre_scores(hyps, [u.translation[lang] for u in speech])["bleu"]),
            "speed": seconds / audio}


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per model, one column per job (score, then speed), then parameters."""
    jobs = list(dict.fromkeys(j for r in results.values() for j in r["jobs"]))
    head = "| model | params | " + " | ".join(f"{'WER' if j == 'asr' else 'BLEU'} {j}" for j in jobs) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(jobs)]
    for name, r in results.items():
        cells = [f"{r['jobs'][j]['score']:.2f}" if j in r["jobs"] else "" for j in jobs]
        lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | " + " | ".join(cells) + " |")
    speed = " | ".join(f"{j}" for j in jobs)
    lines += ["", f"speed (RTF for speech, sentences/s for text): {speed}"]
    lines += [f"  {name}: " + ", ".join(f"{j} {r['jobs'][j]['speed']:.3g}" for j in r["jobs"])
              for name, r in results.items()]
    return "\n".join(lines)


def compare(results: dict[str, dict]) -> list[str]:
    """The first model against the best of the others on each job, and the sizes."""
    names = list(results)
    first, others = results[names[0]], [results[n] for n in names[1:]]
    lines = []
    for job, mine in first["jobs"].items():
        theirs = [o["jobs"][job]["score"] for o in others if job in o["jobs"]]
        if not theirs:
            continue
        best = min(theirs) if job == "asr" else max(theirs)
        gain = (best - mine["score"]) if job == "asr" else (mine["score"] - best)
        lines.append(f"{job}: {names[0]} {mine['score']:.2f} vs single-task {best:.2f} ({gain:+.2f} in its favour)")
    total = sum(o["params"] for o in others)
    lines.append(f"size: {names[0]} {first['params'] / 1e6:.2f}M vs the others' sum {total / 1e6:.2f}M")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="unified model folder (first = the unified one)")
    p.add_argument("--manifest", required=True, help="speech translation manifest (dev.jsonl)")
    p.add_argument("--text", required=True, type=Path, help="Multi30k folder with SPLIT.en and SPLIT.xx")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=0, help="first N utterances and sentences (0 = all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    results: dict[str, dict] = {}
    for folder in args.model:
        m = Unified.load(folder)
        langs = list(m.config.data.langs)
        speech = read_st_manifest(args.manifest, langs if any(j == "st" for j in m.jobs) else [])
        text = {lang: read_lines(text_file(args.text, f"{args.split}.{lang}")) for lang in ["en", *langs]}
        if args.limit:
            speech, text = speech[: args.limit], {k: v[: args.limit] for k, v in text.items()}
        jobs = {job: score_job(m, job, speech, text) for job in jobs_of(m)}
        path = Path(folder)
        name = path.parent.name if path.name == "model" else path.name  # a run's model/ goes by the run's name
        name = name if name not in results else folder  # the row names must differ
        results[name] = {"folder": folder, "params": used_parameters(m), "jobs": jobs}
        print(f"{name}: " + ", ".join(f"{j} {s['score']:.2f}" for j, s in jobs.items()), flush=True)
    print(table(results))
    print("\n".join(compare(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
