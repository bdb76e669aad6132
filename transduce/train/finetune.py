"""Fine-tuning: a new run that starts from another model's weights and shares its tokenizers
(fairseq ``--finetune-from-model``, ESPnet ``--init_param``). Only the weights move over: the optimizer,
the schedule and the data order start fresh."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Collection
from pathlib import Path

import torch
from torch import Tensor, nn

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


def copy_component(model: nn.Module, source: dict[str, Tensor], *, prefix: str, field: str, where: str | Path,
                   grown: Collection[str] = ()) -> int:
    """Component-wise initialization: every tensor of ``model`` under ``prefix`` ("encoder.") from the tensor of
    the same name in ``source`` (another model's full state dict, tied aliases included). A tensor missing on
    either side or of another shape is a ConfigError naming ``field``, ``where``, the tensor and both shapes.
    Names in ``grown`` may have more rows here than there (a vocabulary with extra tokens): the source's rows
    are copied into the first ones and the others keep their initialization. Returns the tensors copied."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    theirs = {k: v for k, v in source.items() if k.startswith(prefix)}
    extra, missing = sorted(theirs.keys() - own.keys()), sorted(own.keys() - theirs.keys())
    if extra:
        raise ConfigError(f"{field}: {where} has tensor {extra[0]} {tuple(theirs[extra[0]].shape)}, this model has "
                          "none")
    if missing:
        raise ConfigError(f"{field}: {where} has no tensor {missing[0]} (this model's is "
                          f"{tuple(own[missing[0]].shape)})")
    copied: dict[str, Tensor] = {}
    for name, mine in own.items():
        src = theirs[name]
        if src.shape == mine.shape:
            copied[name] = src
        elif name in grown and src.dim() >= 1 and src.shape[1:] == mine.shape[1:] and src.size(0) <= mine.size(0):
            copied[name] = torch.cat([src, mine[src.size(0):].to(src.dtype)])
        else:
            raise ConfigError(f"{field}: tensor {name} is {tuple(src.shape)} in {where}, {tuple(mine.shape)} in "
                              "this model")
    model.load_state_dict(copied, strict=False)
    return len(copied)
