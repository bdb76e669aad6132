"""``transduce`` command: data, train, translate, evaluate, average, info."""

from __future__ import annotations

import argparse
import sys

from transduce.cli import commands
from transduce.config import ConfigError
from transduce.data.text import DataError
from transduce.train.trainer import TrainingError

USER_ERRORS = (ConfigError, DataError, FileNotFoundError, commands.UsageError, TrainingError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transduce", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="prepare a dataset").add_subparsers(dest="dataset", required=True)
    m30k = data.add_parser("multi30k", help="Multi30k task 1: download (or copy --from) and verify")
    m30k.add_argument("--out", required=True, help="output folder")
    m30k.add_argument("--from", dest="source", help="local folder with the upstream .gz files (and tok/)")
    m30k.add_argument("--pairs", default="en-de", help="languages, e.g. en-de or en-de-fr (default en-de)")
    toy = data.add_parser("toy", help="toy copy/reverse task for smoke tests")
    toy.add_argument("--out", required=True)
    toy.add_argument("--task", choices=["copy", "reverse"], default="reverse")
    toy.add_argument("--train", type=int, default=5000, help="training pairs")
    toy.add_argument("--seed", type=int, default=1)

    train = sub.add_parser("train", help="train a model from a YAML recipe")
    train.add_argument("recipe", help="YAML recipe (see recipes/)")
    train.add_argument("--out", required=True, help="run folder (checkpoints, metrics, model/)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set optim.lr=5e-4 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    def decode_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="model folder (or run folder)")
        p.add_argument("--beam", type=int, help="beam size (1 = greedy); default from the model")
        p.add_argument("--len-penalty", type=float, help="length penalty alpha")
        p.add_argument("--batch-size", type=int, help="sentences per batch")

    tr = sub.add_parser("translate", help="translate lines from stdin, files or arguments")
    decode_options(tr)
    tr.add_argument("--nbest", type=int, default=1, help="print the K best as 'score<TAB>text'")
    tr.add_argument("--input", action="append", default=[], help="input file (repeatable)")
    tr.add_argument("sentences", nargs="*", help="sentences to translate (else stdin)")

    ev = sub.add_parser("evaluate", help="BLEU/chrF of a model on a test set, as JSON")
    decode_options(ev)
    ev.add_argument("--src", required=True, help="source file (one sentence per line; .gz ok)")
    ev.add_argument("--ref", required=True, help="reference file, detokenized")
    ev.add_argument("--ref-tok", help="official tokenized lowercased references (else made from --ref)")
    ev.add_argument("--lang", help="target language for Moses tokenization (default: the model's)")
    ev.add_argument("--output", help="also write the translations here")

    av = sub.add_parser("average", help="average the last N checkpoints of a run into a model folder")
    av.add_argument("run", help="run folder")
    av.add_argument("--last", type=int, default=10, help="how many newest checkpoints")
    av.add_argument("--out", required=True, help="model folder to write")

    info = sub.add_parser("info", help="describe a model or run folder")
    info.add_argument("path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return getattr(commands, args.command)(args) or 0
    except USER_ERRORS as err:
        print(f"transduce {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
