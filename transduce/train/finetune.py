"""Fine-tuning: a new run that starts from another model's weights and shares its tokenizers
(fairseq ``--finetune-from-model``, ESPnet ``--init_param``). Only the weights move over: the optimizer,
the schedule and the data order start fresh."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

from transduce.config import DEFAULT_TASK, RunConfig
from transduce.errors import ConfigError
from transduce.models.folder import ModelFolder
from transduce.train.tasks import TrainingKind

FRESH = ("normalizer.",)  # re-estimated on the new training data (speech CMVN statistics)


def source_folder(cfg: RunConfig) -> ModelFolder:
    """The model folder named by ``train.init_from``, of this run's task; errors name the field."""
    try:
        source = ModelFolder.read(cfg.train.init_from)
    except (FileNotFoundError, ConfigError) as err:
        raise ConfigError(f"train.init_from: {err}") from None
    task = source.config.get("task", DEFAULT_TASK)
    if task != cfg.task:  # the same kind of run, whichever it is
        raise ConfigError(f"train.init_from: {source.path} is a {task} model, this run is {cfg.task}")
    return source


def share_tokenizers(cfg: RunConfig, run_dir: Path, kind: TrainingKind) -> None:
    """Copy the source model's tokenizer files into ``run_dir`` (before the task is built, which then
    reuses them); a run folder that already has different ones is an error."""
    source = source_folder(cfg)
    for src, dst in zip(kind.folder_files(cfg, source.path), kind.folder_files(cfg, run_dir), strict=True):
        if not src.is_file():
            raise ConfigError(f"train.init_from: {src} is missing")
        if dst.is_file() and dst.read_bytes() != src.read_bytes():
            raise ConfigError(f"train.init_from: {dst} differs from {src}: fine-tune into a new run folder")
        if not dst.is_file():
            shutil.copy(src, dst)


def load_initial_weights(model: nn.Module, cfg: RunConfig, kind: TrainingKind, log: Callable[[str], None]) -> None:
    """Load the source model's weights into ``model`` (same architecture; dropout and other settings that
    hold no weights may differ). Missing, unexpected or differently shaped tensors are an error naming them."""
    source = source_folder(cfg)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(FRESH)}
    own = model.state_dict()
    aliases = kind.tied_aliases(cfg)
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and k not in aliases and not k.startswith(FRESH)]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        parts = [f"{name}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for name, keys in (("shape", shapes), ("missing", missing), ("unexpected", unexpected)) if keys]
        raise ConfigError(f"train.init_from: {source.path} does not fit this model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=False)
    log(f"initialized {len(state)} tensors from {source.path}")
