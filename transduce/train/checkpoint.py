"""Atomic checkpoints of plain tensors and types (loadable with ``weights_only=True``).

Two layouts: ``step_N.pt`` (one file, written by rank 0) and ``step_N/`` (a
``torch.distributed.checkpoint`` folder written by every rank of a sharded run, plus
``extra.pt``). ``load`` reads either into one plain dict, so averaging, exporting and resuming
on any number of ranks do not care which layout a run used."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transduce.errors import DataError

CKPT_RE = re.compile(r"^step_(\d+)(\.pt)?$")


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file, fsync it, rename over ``path``, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, or a sharded checkpoint folder gathered into one dict (no process
    group needed)."""
    path = Path(path)
    if not path.is_dir():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as err:  # empty, truncated, not a checkpoint
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"{path}: not a readable checkpoint ({why})") from None
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    if not (path / "extra.pt").is_file():
        raise ValueError(f"{path}: incomplete sharded checkpoint (no extra.pt)")
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(path, Path(tmp) / "full.pt")
        state = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    return {**state, **torch.load(path / "extra.pt", map_location="cpu", weights_only=True)}


def save_sharded(state: dict[str, Any], extras: dict[str, Any], path: Path, *, is_main: bool,
                 barrier: Callable[[], None]) -> None:
    """Collective: every rank writes its shards into a temporary folder, rank 0 adds ``extras``
    and renames the folder into place (a reader sees the old checkpoint or the whole new one)."""
    import torch.distributed.checkpoint as dcp

    tmp = path.with_name(f".{path.name}.tmp")
    if is_main and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    dcp.save(state, checkpoint_id=str(tmp))
    if is_main:
        atomic_save(extras, tmp / "extra.pt")
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    barrier()


class MismatchError(ValueError):
    """Checkpoint weights with names the model does not have, or without some it has."""


def load_into(model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, Any],
              optimizer_state: dict[str, Any]) -> None:
    """A checkpoint's whole weights and optimizer state into ``model`` and ``optimizer``, plain or sharded
    (each rank takes its shards). A weight several modules share (one embedding for source and target)
    is loaded once, under its first name: the state-dict API skips a module it has already visited and
    would copy the whole tensor given under the second name into the sharded parameter."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    seen: set[int] = set()
    aliases = set()
    names = model.state_dict(keep_vars=True)
    for name, tensor in names.items():
        if id(tensor) in seen:
            aliases.add(name)
        seen.add(id(tensor))
    missing, unexpected = names.keys() - aliases - weights.keys(), weights.keys() - names.keys()
    if missing or unexpected:  # (the state-dict API would keep the model's values for missing names)
        raise MismatchError(f"the weights do not fit the model: missing {sorted(missing)}, "
                            f"unexpected {sorted(unexpected)}")
    weights = {k: v for k, v in weights.items() if k not in aliases}
    held_weights, optimizer_state = _held_part(model, optimizer, weights, optimizer_state)
    if held_weights is not weights:  # a pipeline stage: the state-dict API would assign new tensors next to
        model.load_state_dict(held_weights, strict=False)  # meta ones, untying the shared embedding
        weights = {}
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True, strict=False))


def _held_part(model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, Any],
               optimizer_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights and optimizer state of the parameters this process holds: all of them, except on a stage of
    a pipeline (train/pipeline.py), whose optimizer holds its stage's parameters and the others are meta tensors."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in held}
    if len(names) == len(list(model.parameters())):
        return weights, optimizer_state
    meta = {name for name, t in model.state_dict(keep_vars=True).items() if t.is_meta}
    groups = [{**g, "params": [n for n in g["params"] if n in names]} for g in optimizer_state["param_groups"]]
    return ({k: v for k, v in weights.items() if k not in meta},
            {"state": {k: v for k, v in optimizer_state["state"].items() if k in names}, "param_groups": groups})


def write_latest(folder: str | Path, name: str) -> None:
    """Point ``folder/latest`` at checkpoint ``name`` (atomically, after the checkpoint exists).

    For tools and people; resuming itself tries step checkpoints newest first, which is also
    right after a crash between writing a checkpoint and moving the pointer."""
    folder = Path(folder)
    tmp = folder / ".latest.tmp"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "latest")


REQUIRED_KEYS = ("model", "optimizer", "progress", "rng", "config")


def load_verified(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint and check it has everything a resume needs."""
    payload = load(path)
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return payload


def step_checkpoints(folder: str | Path) -> list[Path]:
    """``step_N.pt`` files and ``step_N/`` sharded folders in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := CKPT_RE.match(p.name)) and (p.is_dir() != bool(m.group(2)))]
    return [p for _, p in sorted(found)]


def prune(folder: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints."""
    for path in step_checkpoints(folder)[: -keep_last or None] if keep_last > 0 else []:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def average(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (fp32 accumulation)."""
    if not paths:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load(path)["model"]
        for name, tensor in state.items():
            if name in total:
                total[name] += tensor.float()
            else:
                total[name] = tensor.float().clone()
    return {name: t / len(paths) for name, t in total.items()}
