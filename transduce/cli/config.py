"""Recipes: YAML files loaded onto the typed dataclasses, with ``--set key=value`` overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from transduce.config import SECTIONS, ConfigError, RunConfig, from_dict


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
    return section, name, yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe, apply overrides, validate. Errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    for text in overrides or []:
        section, name, value = parse_override(text)
        data.setdefault(section, {})[name] = value
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
