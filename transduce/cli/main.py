"""``transduce`` command: data, train, translate, transcribe, evaluate, align, average, info."""

from __future__ import annotations

import argparse
import os
import sys

from transduce.cli import commands  # torch-free: commands import the library inside each function
from transduce.cli.parser import build_parser as _build_parser
from transduce.errors import USER_ERRORS


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(__doc__)


_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """``message`` with the characters that end a line written as escapes (``\\n``), so that an error about
    a value holding one (a --set text, a file name) is still one line."""
    return message.translate(_LINE_BREAKS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from transduce.cli.serve import serve  # the server's imports (FastAPI, torch) only when serving

            return serve(args)
        if args.command == "export":
            from transduce.cli.export import export

            return export(args)
        return getattr(commands, args.command)(args) or 0
    except USER_ERRORS as err:
        print(f"transduce {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed stdout (`transduce translate ... | head`): stop quietly, like cat
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail again
        return 141  # what a shell reports for a process that SIGPIPE ended


if __name__ == "__main__":
    sys.exit(main())
