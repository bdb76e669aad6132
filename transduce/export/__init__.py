"""Exports of model folders to inference runtimes, and loading them back.

``FORMATS`` names each format's module; a format module provides::

    TASKS: tuple[str, ...]                                 the recipe ``task:`` names it can export
    export(src: Path, out: Path, quantize: str | None)     write the exported folder ``out``
    load(path: Path, device: str) -> object                the exported folder's inference object

An exported folder holds ``config.yaml`` and the tokenizer files copied from the source model folder, a
``README.md`` card, ``export.yaml`` (format, quantize, compute_type where relevant, source, transduce version)
and the runtime's own files. ``load_exported`` turns a folder with ``export.yaml`` into its inference object, so
``Translator.load``/``tasks.load`` accept exported folders like native ones. Torch-free at import time.
"""

from __future__ import annotations

import importlib
import shutil
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from transduce.errors import ConfigError, UsageError

FORMATS: dict[str, str] = {
    "ctranslate2": "transduce.export.ctranslate2",
    "onnx": "transduce.export.onnx",
}
"""Export format -> the module that writes and loads it."""

EXPORT_FILE = "export.yaml"
QUANTIZE = ("int8", "int8_float32", "int16", "float16")
"""Every quantization some format knows; each format's ``QUANTIZE`` says which it takes."""


def format_module(fmt: str) -> ModuleType:
    """The module of export format ``fmt``; an unknown format is a UsageError naming the known ones."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    return importlib.import_module(FORMATS[fmt])


def _kinds(fmt: str) -> list[Any]:
    """The task kinds format ``fmt`` exports (its module's ``TASKS``, resolved through the task registry)."""
    from transduce.tasks import get_task

    return [get_task(name) for name in format_module(fmt).TASKS]


def formats_for(kind: Any) -> list[str]:
    """The formats that can export models of task kind ``kind``."""
    return [fmt for fmt in FORMATS if any(kind is other for other in _kinds(fmt))]


def export_model(src: str | Path, fmt: str, out: str | Path, quantize: str | None = None) -> Path:
    """Export the model folder ``src`` to ``fmt`` in ``out``. A model of a task the format cannot export is a
    one-line UsageError naming both ("models/x: a ctc model cannot be exported to ctranslate2 (supported:
    onnx)"); ``out`` must not exist or be empty."""
    from transduce.tasks import open_folder

    module = format_module(fmt)
    kind, cfg, folder = open_folder(src)
    supported = formats_for(kind)  # the formats whose TASKS resolve to this kind
    if fmt not in supported:
        raise UsageError(f"{src}: a {cfg.task} model cannot be exported to {fmt} "
                         f"(supported: {', '.join(supported) or 'none'})")
    takes = getattr(module, "QUANTIZE", QUANTIZE)
    if quantize is not None and quantize not in takes:
        raise UsageError(f"--quantize {quantize}: {fmt} exports take {', '.join(takes)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not an empty folder")
    module.export(folder.path, out, quantize)
    return out


def copy_model_files(src: Path, out: Path) -> list[str]:
    """Copy ``config.yaml``, the task's files (tokenizers, ...) and the companions it has (a translation model's
    ``truecase.json``, which cascades read) of the model folder ``src`` into ``out`` (created); returns the names
    copied."""
    from transduce.cascade import TRUECASER
    from transduce.models.folder import CONFIG
    from transduce.tasks import open_folder

    kind, cfg, folder = open_folder(src)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    companions = [path for path in [folder.path / TRUECASER] if path.is_file()]
    for file in dict.fromkeys([folder.path / CONFIG, *kind.folder_files(cfg, folder.path), *companions]):
        shutil.copy(file, out / file.name)
        names.append(file.name)
    return names


def write_export_info(out: Path, info: dict[str, Any]) -> None:
    """``out/export.yaml``: ``info`` (format, quantize, source, ...) and the transduce version."""
    import yaml

    (out / EXPORT_FILE).write_text(yaml.safe_dump({**info, "transduce": version()}, sort_keys=False))


def version() -> str:
    """The installed transduce version (``unknown`` when run from a tree that was never installed)."""
    try:
        return metadata.version("transduce")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_export_info(path: str | Path) -> dict[str, Any] | None:
    """``export.yaml`` of the folder ``path`` as a mapping, None when there is none; errors name the file."""
    from transduce.models.folder import parse_yaml

    file = Path(path) / EXPORT_FILE
    if not file.is_file():
        return None
    info = parse_yaml(file.read_bytes(), file, "export info")
    if not isinstance(info, dict) or not isinstance(info.get("format"), str):
        raise ConfigError(f"{file}: expected a mapping with a format: entry")
    return info


def require_files(path: Path, names: list[str]) -> None:
    """A one-line FileNotFoundError naming the folder and the first of ``names`` it lacks."""
    for name in names:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: exported folder without {name} (export it again)")


def load_exported(path: str | Path, device: str = "cpu") -> object | None:
    """The inference object of the exported folder ``path`` (one with ``export.yaml``); None for any other
    folder, so that callers fall back to native model folders."""
    info = read_export_info(path)
    if info is None:
        return None
    if info["format"] not in FORMATS:
        raise ConfigError(f"{Path(path) / EXPORT_FILE}: format: unknown export format {info['format']!r} "
                          f"(known: {', '.join(FORMATS)})")
    return format_module(info["format"]).load(Path(path), device)
