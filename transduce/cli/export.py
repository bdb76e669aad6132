"""``transduce export``: a model folder to an inference runtime's format (the library does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from transduce.errors import UsageError


def export(args: argparse.Namespace) -> int:
    """Export ``--model`` to ``--format`` in ``--out`` and print where it went and what it measured."""
    from transduce.export import export_model, read_export_info

    try:
        out = export_model(args.model, args.format, args.out, args.quantize)
    except ValueError as err:  # weights that do not fit the config, a vocabulary CTranslate2 cannot take
        raise UsageError(str(err)) from None
    info = read_export_info(out) or {}
    details = ", ".join(f"{key} {value}" for key, value in info.items()
                        if key in ("quantize", "compute_type") and value is not None)
    print(f"exported {args.model} to {args.format} in {Path(out)}{f' ({details})' if details else ''}; "
          f"see {Path(out) / 'README.md'}")
    return 0
