"""Model folders: the one reader and writer of every task's folder.

A model folder holds::

    model.safetensors  the weights, each tensor once (tied aliases left out and re-tied on load), in the dtype
                       they were stored in (float16 folders load as float32)
    config.yaml        the run config (``task:`` and the recipe's sections)
    spm.model ...      the files the task needs besides (tokenizers, ...): the task kind names them
    card.json          training facts: updates, dev scores, where the weights came from
    README.md          the model card for people, when there is one

A run folder holds its exported model folder in ``model/``. This layer knows no task names: the task kind
(``transduce/tasks/``) parses ``config``, builds the model and says which files and tied aliases a folder has.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from transduce.errors import ConfigError

WEIGHTS, CONFIG, CARD, README = "model.safetensors", "config.yaml", "card.json", "README.md"


def resolve(path: str | Path) -> Path:
    """A model folder, or a run folder holding one in ``model/``."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    if (path / "model" / WEIGHTS).is_file():
        return path / "model"
    raise FileNotFoundError(f"{path}: no {WEIGHTS} here or in {path / 'model'}")


def parse_yaml(text: str | bytes, where: str | Path, what: str = "YAML") -> object:
    """``text`` (or UTF-8/UTF-16 bytes) parsed as YAML, which also reads JSON; anything YAML cannot read (bad
    bytes, impossible dates such as ``2024-13-01``, nesting too deep for the parser) is a one-line ConfigError
    naming ``where``: "WHERE: invalid WHAT (...)"."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise ConfigError(f"{where}: invalid {what} ({(str(err).splitlines() or [type(err).__name__])[0]})") from None


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML (or JSON) file holding a mapping; errors name the file."""
    data = parse_yaml(path.read_bytes(), path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


@dataclass
class ModelFolder:
    """A model folder as read: its config and card; the weights are read by ``state_dict``/``load_into``."""

    path: Path
    config: dict[str, Any]
    """config.yaml as a plain mapping (the task kind turns it into a RunConfig)."""
    card: dict[str, Any]
    """card.json, or {} when there is none."""
    readme: str | None = None
    """README.md, when there is one."""

    @classmethod
    def read(cls, path: str | Path) -> ModelFolder:
        """The model folder at ``path`` (or in the run folder ``path``); errors name the folder and file."""
        folder = resolve(path)
        if not (folder / CONFIG).is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG}")
        card = _read_mapping(folder / CARD, "card") if (folder / CARD).is_file() else {}
        readme = (folder / README).read_text() if (folder / README).is_file() else None
        return cls(folder, _read_mapping(folder / CONFIG, "config"), card, readme)

    def file(self, name: str | Path) -> Path:
        """A file the task keeps in the folder (a tokenizer, ...); FileNotFoundError naming it when missing."""
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file in the model folder")
        return path

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored tensors as float32 (tied aliases are not among them)."""
        try:
            state = load_file(str(self.path / WEIGHTS))
        except (SafetensorError, OSError) as err:
            raise ConfigError(f"{self.path / WEIGHTS}: unreadable weights ({err})") from None
        return {name: tensor.float() for name, tensor in state.items()}

    def load_into(self, model: nn.Module, aliases: Collection[str] = ()) -> nn.Module:
        """``model`` with the folder's weights, in eval mode. ``aliases`` are the parameter names stored once
        because they are tied to another (``write_model_folder`` leaves them out); anything else missing, or
        any tensor the model does not have, is an error naming the folder and the tensors."""
        state, expected = self.state_dict(), model.state_dict()
        wrong = [name for name, tensor in state.items() if name in expected and tensor.shape != expected[name].shape]
        if wrong:  # load_state_dict would raise a RuntimeError listing every tensor
            raise ConfigError(f"{self.path}: weights do not match config ({len(wrong)} tensors differ in shape, e.g. "
                              f"{wrong[0]} {tuple(state[wrong[0]].shape)} in the file, "
                              f"{tuple(expected[wrong[0]].shape)} in the model config.yaml describes)")
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [name for name in missing if name not in aliases]
        if missing or unexpected:
            raise ConfigError(f"{self.path}: weights do not match config (missing {missing}, unexpected {unexpected})")
        return model.eval()


def save_weights(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype = torch.float32,
                 skip: Collection[str] = ()) -> None:
    """Each tensor stored once, as ``dtype``: names in ``skip`` (aliases of tied weights) are left out and
    re-tied by the model on load."""
    tensors = {k: v.detach().cpu().to(dtype).contiguous().clone() for k, v in state.items() if k not in skip}
    save_file(tensors, str(path))


def write_model_folder(out: str | Path, weights: dict[str, torch.Tensor], config: dict[str, Any],
                       files: Sequence[Path], card: dict[str, Any], *, dtype: torch.dtype = torch.float32,
                       aliases: Collection[str] = (), readme: str | None = None) -> Path:
    """``out``: model.safetensors (without ``aliases``, as ``dtype``), config.yaml, copies of ``files`` (the
    task's tokenizers etc., each once), card.json and, when given, README.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(weights, out / WEIGHTS, dtype, skip=aliases)
    (out / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    for path in dict.fromkeys(files):
        if path.resolve() != (out / path.name).resolve():
            shutil.copy(path, out / path.name)
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    if readme is not None:
        (out / README).write_text(readme)
    return out
