"""``transduce`` command: data, train, translate, transcribe, evaluate, average, info."""

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
    digits = data.add_parser("digits", help="connected digits from the Free Spoken Digit Dataset (split by speaker)")
    digits.add_argument("--out", required=True, help="output folder")
    digits.add_argument("--from", dest="source", help="local FSDD folder (with recordings/); else download")
    digits.add_argument("--seed", type=int, default=1)
    digits.add_argument("--dev-speakers", default="nicolas", help="comma-separated dev speakers")
    digits.add_argument("--test-speakers", default="", help="comma-separated test speakers (default none)")
    caps = data.add_parser("captions", help="Multi30k English captions spoken by TTS voices (split by voice)")
    caps.add_argument("--out", required=True, help="output folder")
    caps.add_argument("--from", dest="source", help="local Multi30k folder; else download")
    caps.add_argument("--seed", type=int, default=1)
    caps.add_argument("--train-sentences", type=int, default=10000)
    caps.add_argument("--dev-sentences", type=int, default=500)
    caps.add_argument("--workers", type=int, default=1, help="parallel synthesis processes")
    man = data.add_parser("manifest", help="convert a Kaldi data folder or a Lhotse CutSet to a JSON-lines manifest")
    man.add_argument("--from", dest="source", required=True, help="Kaldi folder (wav.scp, text) or CutSet file")
    man.add_argument("--out", required=True, help="manifest to write (.jsonl)")
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

    def decode_options(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--model", required=required, help="model folder (or run folder)")
        p.add_argument("--beam", type=int, help="beam size (1 = greedy); default from the model")
        p.add_argument("--len-penalty", type=float, help="length penalty alpha")
        p.add_argument("--batch-size", type=int, help="sentences per batch")

    def speech_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="speech model folder (or run folder)")
        p.add_argument("--beam", type=int, help="CTC prefix beam size (1 = greedy); default from the model")
        p.add_argument("--token-prune", type=int, help="tokens per frame in beam search (0 = all)")
        p.add_argument("--batch-size", type=int, help="utterances per batch")

    tr = sub.add_parser("translate", help="translate lines from stdin, files or arguments")
    decode_options(tr)
    tr.add_argument("--nbest", type=int, default=1, help="print the K best as 'score<TAB>text'")
    tr.add_argument("--input", action="append", default=[], help="input file (repeatable)")
    tr.add_argument("sentences", nargs="*", help="sentences to translate (else stdin)")

    tc = sub.add_parser("transcribe", help="speech to text: FILE<TAB>TRANSCRIPT lines, or JSON lines with --manifest")
    speech_options(tc)
    tc.add_argument("--manifest", help="JSON-lines manifest: print {id, text} per utterance")
    tc.add_argument("--nbest", type=int, default=1, help="print the K best as 'FILE<TAB>score<TAB>text'")
    tc.add_argument("--timestamps", action="store_true", help="also print each token's start time (JSON)")
    tc.add_argument("files", nargs="*", help="audio files (wav, flac, ogg)")

    ev = sub.add_parser("evaluate", help="BLEU/chrF of a translation model, or WER/CER of a speech model, as JSON")
    decode_options(ev, required=True)
    ev.add_argument("--token-prune", type=int, help="speech: tokens per frame in beam search (0 = all)")
    ev.add_argument("--src", help="translation: source file (one sentence per line; .gz ok)")
    ev.add_argument("--ref", help="translation: reference file, detokenized")
    ev.add_argument("--manifest", help="speech: JSON-lines manifest with reference transcripts")
    ev.add_argument("--json", action="store_true", help="speech: one-line JSON (default: indented)")
    ev.add_argument("--report", help="speech: write the per-utterance alignment report (S/I/D) here")
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
