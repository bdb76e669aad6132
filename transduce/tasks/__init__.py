"""Task kinds: one module per kind, and the one dict that maps a recipe's ``task:`` to its kind.

A task kind owns its config sections, model building, training data/batches/loss/dev evaluation, the files of
its model folders (tokenizers, ...), its tied weights, and the inference object it loads (``Translator``,
``Recognizer``). Nothing outside this package tells tasks apart by name: config parsing, the trainer, export,
fine-tuning, ``average``, ``info`` and the translate/transcribe commands ask the kind. Adding a task is one
module plus one entry below (as torchtune's ``_recipe_registry.py``; no decorators, no import-time
registration). Entries are "module:attribute" strings imported on first use, so importing this registry is
cheap; an entry may also be a kind object itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from transduce.config import RunConfig, from_dict
from transduce.errors import ConfigError, UsageError
from transduce.models.folder import ModelFolder
from transduce.train.tasks import TrainingKind

if TYPE_CHECKING:
    from torch import nn

TASKS: dict[str, Any] = {
    "translation": "transduce.tasks.translation:TRANSLATION",
    "rnn_translation": "transduce.tasks.translation:RNN_TRANSLATION",
    "ctc": "transduce.tasks.speech:SPEECH",
    "speech_translation": "transduce.tasks.speech_translation:SPEECH_TRANSLATION",
    "ocr": "transduce.tasks.ocr:OCR",
    "image_translation": "transduce.tasks.image_translation:IMAGE_TRANSLATION",
    "unified": "transduce.tasks.unified:UNIFIED",
}
"""Recipe ``task:`` -> its kind (a "module:attribute" string, or the kind object)."""


class TaskKind(TrainingKind, Protocol):
    """Everything the library asks a task (the training side is ``train.tasks.TrainingKind``)."""

    description: str
    """What its models are, for messages: "a translation model"."""
    inference: type
    """The class of the object ``load`` returns (``Translator``, ``Recognizer``)."""

    @property
    def sections(self) -> Mapping[str, type]:
        """The dataclass of each recipe section (data, model and decode are the kind's own)."""
        ...

    def build_model(self, cfg: RunConfig, folder: Path) -> nn.Module:
        """An untrained model for ``cfg`` and the vocabulary files in ``folder`` (a model or run folder)."""
        ...

    def load(self, folder: ModelFolder, device: str = "cpu") -> Any:
        """The inference object of a model folder."""
        ...

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """Lines ``transduce info`` prints about the model."""
        ...


def get_task(name: str) -> TaskKind:
    """The kind registered for ``name``; an unknown name is a ConfigError naming the known ones."""
    if name not in TASKS:
        raise ConfigError(f"task: unknown task {name!r} (known: {', '.join(TASKS)})")
    entry = TASKS[name]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
    return entry


def parse_config(data: object) -> RunConfig:
    """A recipe or model config as a nested dict (from YAML) -> RunConfig, with the sections of its task's kind;
    unknown keys and wrong types raise ConfigError naming the key."""
    return from_dict(data, lambda name: get_task(name).sections)


def open_folder(path: str | Path) -> tuple[TaskKind, RunConfig, ModelFolder]:
    """A model folder (or run folder) with its kind and parsed config; errors name the folder."""
    folder = ModelFolder.read(path)
    try:
        cfg = parse_config(folder.config)
    except ConfigError as err:
        raise ConfigError(f"{folder.path / 'config.yaml'}: {err}") from None
    return get_task(cfg.task), cfg, folder


def require(path: str | Path, inference: type, needs: str) -> tuple[TaskKind, RunConfig, ModelFolder]:
    """``open_folder``, and a UsageError unless the kind's inference object is an ``inference``: e.g.
    "models/multi30k-en-de: a translation model; transcribe needs a speech model" (``needs`` is the part after
    the semicolon)."""
    kind, cfg, folder = open_folder(path)
    if not issubclass(kind.inference, inference):
        raise UsageError(f"{path}: {kind.description}; {needs}")
    return kind, cfg, folder


def build_loaded(path: str | Path, inference: type, needs: str) -> tuple[nn.Module, RunConfig, ModelFolder]:
    """The model of a folder whose kind's inference object is an ``inference``, built and with its weights, in
    eval mode (``Translator.load`` and ``Recognizer.load`` read folders through this)."""
    kind, cfg, folder = require(path, inference, needs)
    return folder.load_into(kind.build_model(cfg, folder.path), kind.tied_aliases(cfg)), cfg, folder


def load(path: str | Path, device: str = "cpu") -> Any:
    """The inference object of any model folder (its kind decides which), of an exported folder (its
    runtime's: ``transduce.export.load_exported``) or of a bundled cascade (``Cascade``, see
    ``transduce.cascade.CASCADE``). Speech translation either way: ``load(DIR).translate(["a.wav"], "de")``."""
    from transduce.cascade import Cascade, cascade_parts
    from transduce.export import load_exported  # the export layer reads folders through this package

    if cascade_parts(path) is not None:
        return Cascade.load_folder(path, device=device)
    exported = load_exported(path, device)
    if exported is not None:
        return exported
    kind, _, folder = open_folder(path)
    return kind.load(folder, device)
