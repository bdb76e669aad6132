"""Decoding speed and quality of a translation model four ways, side by side in one run: our PyTorch beam search
(float32, and int8 Linear layers through ``--quantize int8``) and its CTranslate2 export (float32, and int8
weights in the compute type this CPU runs them with).

Run:
    .venv/bin/python benchmarks/ct2_decode.py --model models/multi30k-en-de
Quick check:
    .venv/bin/python benchmarks/ct2_decode.py --limit 100 --repeats 1

Exports --model into a temporary folder (``transduce export``'s library call), then translates Multi30k
--split (test_2016_flickr en->de by default) with each path through the same ``Translator.search`` (SentencePiece
tokenization included in every timing, beam --beam, the model's length penalty and batch size). The paths run
round-robin --repeats times and each keeps its fastest run, so that a busy machine slows them alike. Prints
sentences/s and the ratio to PyTorch float32, detokenized sacreBLEU and tokenized lowercased BLEU (the
Multi30k convention) with the difference to PyTorch float32, and how many outputs are identical to it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, REPO, machine_line, text_file

from transduce.data.text import read_lines
from transduce.export import export_model
from transduce.metrics.bleu import sacre_scores, tokenized_bleu
from transduce.translate import Translator


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "multi30k-en-de"))
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Multi30k folder (with tok/)")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    p.add_argument("--repeats", type=int, default=2, help="round-robin runs; each path keeps its fastest")
    return p.parse_args()


def load_paths(model: str, workdir: Path) -> dict[str, Translator]:
    """The four translators, exports written into ``workdir``."""
    fp32 = export_model(model, "ctranslate2", workdir / "ct2-float32")
    int8 = export_model(model, "ctranslate2", workdir / "ct2-int8", "int8")
    paths = {"pytorch float32": Translator.load(model), "pytorch int8": Translator.load(model, quantize="int8")}
    for out in (fp32, int8):
        translator = Translator.load(out)
        paths[f"ctranslate2 {translator.model.compute_type}"] = translator  # type: ignore[union-attr]
    return paths


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)  # CTranslate2 takes PyTorch's thread count at load
    data = Path(args.data)
    src = read_lines(text_file(data, f"{args.split}.en"))
    refs = read_lines(text_file(data, f"{args.split}.de"))
    refs_tok = read_lines(data / "tok" / f"{args.split}.lc.norm.tok.de")
    if args.limit:
        src, refs, refs_tok = src[: args.limit], refs[: args.limit], refs_tok[: args.limit]
    print(machine_line(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        paths = load_paths(args.model, Path(tmp))
        for translator in paths.values():
            translator.translate(src[:16], beam=args.beam)  # warm-up
        seconds = dict.fromkeys(paths, float("inf"))
        outputs: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, translator in paths.items():
                started = time.perf_counter()
                outputs[name] = translator.translate(src, beam=args.beam)
                seconds[name] = min(seconds[name], time.perf_counter() - started)
    base = "pytorch float32"
    bleu = {name: (float(sacre_scores(out, refs)["bleu"]), tokenized_bleu(out, refs_tok, "de"))
            for name, out in outputs.items()}
    print(f"{args.model}, {args.split}: {len(src)} sentences, beam {args.beam}, best of {args.repeats}")
    print(f"{'path':<26}{'sent/s':>9}{'ratio':>8}{'BLEU':>8}{'tok BLEU':>10}{'delta':>8}{'same':>7}")
    for name, out in outputs.items():
        speed = len(src) / seconds[name]
        same = sum(a == b for a, b in zip(out, outputs[base], strict=True))
        print(f"{name:<26}{speed:>9.1f}{seconds[base] / seconds[name]:>7.2f}x{bleu[name][0]:>8.2f}"
              f"{bleu[name][1]:>10.2f}{bleu[name][1] - bleu[base][1]:>+8.2f}{same:>7}")


if __name__ == "__main__":
    main()
