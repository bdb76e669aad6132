"""Atomic checkpoints of plain tensors and types (loadable with ``weights_only=True``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


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
    return torch.load(path, map_location="cpu", weights_only=True)


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
    """``step_N.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def prune(folder: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints."""
    for path in step_checkpoints(folder)[: -keep_last or None] if keep_last > 0 else []:
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
