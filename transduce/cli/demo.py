"""``make run``: with the bundled models, offline: translate the example sentences, and
transcribe the example recordings."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from transduce.translate import Translator

ROOT = Path(__file__).resolve().parents[2]


def translate_examples() -> None:
    model_dir = ROOT / "models" / "multi30k-en-de"
    examples = (ROOT / "examples" / "en-de.en").read_text().splitlines()
    started = time.perf_counter()
    translator = Translator.load(model_dir)
    loaded = time.perf_counter()
    outputs = translator.translate(examples, beam=5)
    done = time.perf_counter()
    card = translator.card
    print(f"model: {model_dir.relative_to(ROOT)} "
          f"(test_2016 BLEU {card.get('test_2016_flickr', {}).get('bleu_tok_lc', '?')}, tokenized lowercased)")
    for src, out in zip(examples, outputs, strict=False):
        print(f"  en: {src}\n  de: {out}\n")
    print(f"{len(examples)} sentences, beam 5: load {loaded - started:.2f}s, "
          f"translate {done - loaded:.2f}s ({len(examples) / (done - loaded):.1f} sentences/s)\n")


def transcribe_examples(model_name: str, folder: Path) -> None:
    from transduce.metrics.wer import wer
    from transduce.recognize import Recognizer

    model_dir = ROOT / "models" / model_name
    rows = [line.split("\t") for line in (folder / "transcripts.tsv").read_text().splitlines()]
    recognizer = Recognizer.load(model_dir)
    started = time.perf_counter()
    hyps = recognizer.transcribe([folder / name for name, _ in rows])
    seconds = time.perf_counter() - started
    dev = recognizer.card.get("dev_eval", {})
    print(f"model: {model_dir.relative_to(ROOT)} (dev WER {dev.get('wer', '?')}%, greedy)")
    for (name, ref), hyp in zip(rows, hyps, strict=True):
        print(f"  {name}\n    heard: {hyp}\n    said:  {ref}")
    print(f"{len(rows)} recordings: WER {wer(hyps, [r for _, r in rows]):.1f}%, {seconds:.2f}s\n")


def main() -> int:
    translate_examples()
    for name, folder in (("digits-conformer-ctc", "digits"), ("captions-conformer-ctc", "captions")):
        if (ROOT / "models" / name).is_dir():
            transcribe_examples(name, ROOT / "examples" / folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
