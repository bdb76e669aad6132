"""Cascaded speech translation on a speech translation manifest, step by step: what the speech recognizer
costs, what the case/punctuation mismatch costs, and what restoring the transcripts buys back.

Run (the numbers in docs/results/st.md):
    transduce data speech-translation --from ../shared/data/multi30k --out work/st/data --train-sentences 0
    .venv/bin/python benchmarks/st_cascade.py --manifest work/st/data/dev.jsonl

Rows, all translated by --mt with its default search and scored against the manifest's --lang translations:
  gold                 text MT of the original English sentences (cased, punctuated): the ceiling
  gold normalized      text MT of the transcripts (lowercase words, no punctuation): the mismatch alone
  gold + first/final   the same with a capital first letter and the corpus's final '.': the cheapest fix
  gold + truecase      the same restored by a Truecaser learned from --truecase (the MT's source text)
  cascade              ASR (--asr, its default search) then MT: the mismatch and the recognition errors
  cascade + first/final, cascade + truecase   the restorations on the recognized text
Each row prints sacreBLEU, chrF, tokenized-lowercased BLEU and BLEU relative to the ceiling; the cascade rows
also print the real-time factor (recognition + restoration + translation seconds per audio second). The
recognizer runs once; its transcripts feed every cascade row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, REPO, machine_line

from transduce.cascade import Truecaser
from transduce.data.speech_translation import read_st_manifest
from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu
from transduce.metrics.wer import wer
from transduce.recognize import Recognizer
from transduce.translate import Translator


def _score(hyps: list[str], refs: list[str], refs_tok: list[str], lang: str) -> dict[str, float]:
    scores = sacre_scores(hyps, refs)
    return {"bleu": float(scores["bleu"]), "chrf": float(scores["chrf"]),
            "bleu_tok_lc": tokenized_bleu(hyps, refs_tok, lang)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="speech translation manifest with text_original")
    p.add_argument("--asr", default=str(REPO / "models" / "captions-conformer-ctc"))
    p.add_argument("--mt", default=str(REPO / "models" / "multi30k-en-de"))
    p.add_argument("--lang", default="de")
    p.add_argument("--truecase", default=str(DEFAULT_DATA / "train.en.gz"), help="the MT model's source text")
    p.add_argument("--limit", type=int, default=0, help="first N utterances only (0 = all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", help="write each row's translations here as ROW.txt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    utts = read_st_manifest(args.manifest, [args.lang])
    utts = utts[: args.limit] if args.limit else utts
    if not all(u.text_original for u in utts):
        raise SystemExit(f"{args.manifest}: the gold rows need text_original (transduce data speech-translation)")
    refs = [u.translation[args.lang] for u in utts]
    refs_tok = [mmt_tokenize(r, args.lang) for r in refs]
    audio_seconds = sum(u.utt.duration for u in utts)
    print(machine_line(args.threads))
    print(f"{args.manifest}: {len(utts)} utterances, {audio_seconds / 60:.1f} min, {args.lang}; "
          f"ASR {args.asr}, MT {args.mt}")

    started = time.perf_counter()
    truecaser = Truecaser.from_text(args.truecase)
    learn_seconds = time.perf_counter() - started
    first_final = Truecaser(final=truecaser.final)
    print(f"truecaser from {args.truecase}: {len(truecaser.forms)} written forms, final {truecaser.final!r}, "
          f"learned in {learn_seconds:.2f} s")
    recognizer, translator = Recognizer.load(args.asr), Translator.load(args.mt)
    started = time.perf_counter()
    asr = recognizer.transcribe([u.utt.audio for u in utts])
    asr_seconds = time.perf_counter() - started
    gold = [u.utt.text for u in utts]
    print(f"ASR: WER {wer(asr, gold):.2f}, {asr_seconds:.1f} s (RTF {asr_seconds / audio_seconds:.4f})")
    keep = Truecaser(capitalize=False)  # restores nothing
    rows = {"gold": ([u.text_original for u in utts], keep), "gold normalized": (gold, keep),
            "gold + first/final": (gold, first_final), "gold + truecase": (gold, truecaser),
            "cascade": (asr, keep), "cascade + first/final": (asr, first_final),
            "cascade + truecase": (asr, truecaser)}
    ceiling = 0.0
    print(f"{'row':24s} {'BLEU':>6s} {'chrF':>6s} {'tokBLEU':>7s} {'rel':>6s} {'RTF':>7s}")
    for name, (texts, restore) in rows.items():
        started = time.perf_counter()
        restored = [restore(t) for t in texts]
        hyps = translator.translate(restored)
        seconds = time.perf_counter() - started
        scores = _score(hyps, refs, refs_tok, args.lang)
        ceiling = ceiling or scores["bleu"]
        rtf = f"{(asr_seconds + seconds) / audio_seconds:7.4f}" if name.startswith("cascade") else f"{'':7s}"
        print(f"{name:24s} {scores['bleu']:6.2f} {scores['chrf']:6.2f} {scores['bleu_tok_lc']:7.2f} "
              f"{scores['bleu'] / ceiling:6.1%} {rtf}", flush=True)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            slug = name.replace(" + ", "-").replace(" ", "-").replace("/", "-")
            (Path(args.save) / f"{slug}.txt").write_text("".join(f"{s}\t{h}\n" for s, h in zip(restored, hyps,
                                                                                                strict=True)))


if __name__ == "__main__":
    main()
