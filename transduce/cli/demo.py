"""``make run``: translate the bundled example sentences with the bundled model, offline."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from transduce.translate import Translator

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
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
          f"translate {done - loaded:.2f}s ({len(examples) / (done - loaded):.1f} sentences/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
