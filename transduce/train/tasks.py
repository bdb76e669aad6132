"""What the trainer needs to know about a kind of model and data, as two small protocols.

The trainer owns the loop, distribution, precision and checkpoints. A task kind (``transduce/tasks/``: one
module per kind, one dict naming them) says which files and tied weights its model folders have and prepares a
``Task`` for a run: the data, the model builder, the loss module DDP wraps and dev evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from transduce.config import RunConfig
from transduce.train.distributed import DistContext


class TrainBatch(Protocol):
    """A collated batch: ``inputs()`` are the loss module's arguments; ``num_tokens`` is the
    loss normalizer (target tokens)."""

    @property
    def num_tokens(self) -> int: ...

    def to(self, device: torch.device | str) -> TrainBatch: ...

    def inputs(self) -> tuple[Tensor, ...]: ...


class Task(Protocol):
    data_keys: tuple[str, ...]
    """``data.*`` keys a checkpoint must agree on (they shape the vocabulary or the features)."""

    def build_model(self) -> nn.Module: ...

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        """A module whose ``forward(*batch.inputs())`` returns (loss sum, nll sum)."""
        ...

    def batches(self, epoch: int) -> list[list[int]]:
        """Training batches (lists of example indices) of ``epoch``, from the seed only."""
        ...

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[TrainBatch]: ...

    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev metrics, ``loss`` among them (per target token, in bits: the curves plot it beside the training
        loss), and the score early stopping maximizes."""
        ...


class TrainingKind(Protocol):
    """The training side of a task kind (the whole kind is ``transduce.tasks.TaskKind``)."""

    name: str
    """The recipe's ``task:`` value."""

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> Task:
        """Prepare the data of a run (training tokenizers etc. into ``run_dir`` the first time)."""
        ...

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        """Files besides weights and config that a model folder (or run folder) of this kind holds."""
        ...

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        """Parameter names stored once in a model folder because they are tied to another."""
        ...
