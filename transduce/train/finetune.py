"""Fine-tuning: a new run that starts from another model's weights and shares its tokenizers
(fairseq ``--finetune-from-model``, ESPnet ``--init_param``). Only the weights move over: the optimizer,
the schedule and the data order start fresh."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import yaml
from safetensors.torch import load_file
from torch import nn

from transduce.config import ConfigError, RunConfig, from_dict
from transduce.train.export import model_files, weight_aliases
from transduce.translate import resolve_model_dir

FRESH = ("normalizer.",)  # re-estimated on the new training data (speech CMVN statistics)


def source_folder(cfg: RunConfig) -> Path:
    """The model folder named by ``train.init_from``; errors name the field."""
    try:
        return resolve_model_dir(cfg.train.init_from)
    except FileNotFoundError as err:
        raise ConfigError(f"train.init_from: {err}") from None


def share_tokenizers(cfg: RunConfig, run_dir: Path) -> None:
    """Copy the source model's tokenizer files into ``run_dir`` (before the task is built, which then
    reuses them); a run folder that already has different ones is an error."""
    source = source_folder(cfg)
    source_cfg = from_dict(yaml.safe_load((source / "config.yaml").read_text()))
    if source_cfg.task != cfg.task:
        raise ConfigError(f"train.init_from: {source} is a {source_cfg.task} model, this run is {cfg.task}")
    for src, dst in zip(model_files(source_cfg, source), model_files(cfg, run_dir), strict=True):
        if not src.is_file():
            raise ConfigError(f"train.init_from: {src} is missing")
        if dst.is_file() and dst.read_bytes() != src.read_bytes():
            raise ConfigError(f"train.init_from: {dst} differs from {src}: fine-tune into a new run folder")
        if not dst.is_file():
            shutil.copy(src, dst)


def load_initial_weights(model: nn.Module, cfg: RunConfig, log: Callable[[str], None]) -> None:
    """Load the source model's weights into ``model`` (same architecture; dropout and other settings that
    hold no weights may differ). Missing, unexpected or differently shaped tensors are an error naming them."""
    source = source_folder(cfg)
    state = {k: v.float() for k, v in load_file(str(source / "model.safetensors")).items()
             if not k.startswith(FRESH)}
    own = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and k not in weight_aliases(cfg) and not k.startswith(FRESH)]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        parts = [f"{name}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for name, keys in (("shape", shapes), ("missing", missing), ("unexpected", unexpected)) if keys]
        raise ConfigError(f"train.init_from: {source} does not fit this model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=False)
    log(f"initialized {len(state)} tensors from {source}")
