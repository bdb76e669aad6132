"""End-to-end speech translation and its ablations, trained and scored in one run: the recipe as it is, without
the encoder's pre-training (model.init_encoder_from), without the CTC loss (model.ctc_weight 0), and without both.
Each variant trains with the same seed, data and updates, then decodes the dev manifest in every target language
with the recipe's search; one table of BLEU, chrF and real-time factor per variant and language.

Run (Multi30k: the recipe's commands in docs/speech_translation.md first):
    .venv/bin/python benchmarks/st_ablation.py --recipe recipes/multi30k-st-conformer.yaml --out work/st-ablation
Toy (tone "speech", minutes on a CPU; the encoder from the tiny hybrid tone recognizer):
    .venv/bin/python benchmarks/st_ablation.py --recipe recipes/tiny-tones-st.yaml --out work/st-toy --toy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import REPO, machine_line

from transduce.cli.config import load_recipe
from transduce.data.speech_translation import read_st_manifest
from transduce.metrics.bleu import sacre_scores
from transduce.speech_translate import SpeechTranslator
from transduce.train.trainer import Trainer

VARIANTS = {"full": [], "no encoder init": ["model.init_encoder_from=''"], "no CTC": ["model.ctc_weight=0"],
            "neither": ["model.init_encoder_from=''", "model.ctc_weight=0"]}


def toy_data(out: Path) -> list[str]:
    """Tone data and a tiny hybrid tone recognizer of the toy recipe's encoder shape -> the recipe overrides."""
    from transduce.data.tones import write_tone_translations

    if not (out / "data" / "dev.jsonl").is_file():
        write_tone_translations(out / "data", train=300, valid=40)
    if not (out / "asr" / "model").is_dir():
        cfg = load_recipe(REPO / "recipes" / "tiny-tones-hybrid.yaml", [f"data.dir={out / 'data'}"])
        Trainer(cfg, out / "asr", log=lambda _: None, show_progress=False).fit()
    return [f"data.dir={out / 'data'}", f"model.init_encoder_from={out / 'asr'}"]


def score(run: Path, manifest: Path) -> dict[str, dict[str, float]]:
    translator = SpeechTranslator.load(run)
    rows = {}
    for lang in translator.langs:
        utts = read_st_manifest(manifest, [lang])
        started = time.perf_counter()
        hyps = translator.translate([u.utt.audio for u in utts], lang)
        seconds = time.perf_counter() - started
        scores = sacre_scores(hyps, [u.translation[lang] for u in utts])
        rows[lang] = {"bleu": float(scores["bleu"]), "chrf": float(scores["chrf"]),
                      "rtf": round(seconds / sum(u.utt.duration for u in utts), 4)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (repeatable)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--toy", action="store_true", help="make the tone data and tone recognizer first")
    args = parser.parse_args()
    base = toy_data(args.out) if args.toy else []
    print(machine_line(torch.get_num_threads()))
    results = {}
    for name in args.variants.split(","):
        cfg = load_recipe(args.recipe, [*base, *args.overrides, *VARIANTS[name]])
        run = args.out / name.replace(" ", "-")
        started = time.perf_counter()
        Trainer(cfg, run, log=lambda _: None, show_progress=False).fit(resume=(run / "checkpoints").is_dir())
        trained = time.perf_counter() - started
        results[name] = score(run, Path(cfg.data.dir) / cfg.data.valid)
        for lang, row in results[name].items():
            print(f"{name:16s} {lang}  BLEU {row['bleu']:6.2f}  chrF {row['chrf']:6.2f}  RTF {row['rtf']:.4f}  "
                  f"(trained {trained:.0f} s)", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
