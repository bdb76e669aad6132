"""Recipes: YAML files loaded onto the typed dataclasses, with ``--set key=value`` overrides."""

from __future__ import annotations

from pathlib import Path

from transduce.config import SECTIONS, RunConfig
from transduce.errors import ConfigError
from transduce.models.folder import parse_yaml
from transduce.tasks import parse_config


def parse_override(text: str) -> tuple[str, str, object]:
    """``optim.lr=5e-4`` -> ("optim", "lr", 0.0005); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    if key.count(".") != 1:
        raise ConfigError(f"--set {text}: expected section.key=value, e.g. optim.lr=5e-4")
    section, name = key.split(".")
    if section not in SECTIONS:
        raise ConfigError(f"--set {key}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
    return section, name, parse_yaml(raw, f"--set {key}")


def _check_keys(data: dict, path: Path) -> None:
    """Section and field names must be strings (YAML also allows numbers, booleans, null and lists as keys)."""
    for section, fields in data.items():
        if not isinstance(section, str):
            raise ConfigError(f"{path}: section name {section!r} is a {type(section).__name__}, not a string")
        for name in fields if isinstance(fields, dict) else ():
            if not isinstance(name, str):
                raise ConfigError(f"{path}: {section}: key {name!r} is a {type(name).__name__}, not a string")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe, apply overrides, validate. Errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (invalid byte at {err.start})") from None
    data = parse_yaml(text, path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    _check_keys(data, path)
    for text in overrides or []:
        section, name, value = parse_override(text)
        fields = data.setdefault(section, {})
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: {section}: expected a mapping to apply --set {section}.{name}, "
                              f"got {type(fields).__name__}")
        fields[name] = value
    try:
        return parse_config(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
