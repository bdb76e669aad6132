"""What the trainer needs to know about a kind of model and data, as one small object.

The trainer owns the loop, distribution, precision and checkpoints; a task owns the data,
the model builder, the loss module DDP wraps, dev evaluation and the exported files.
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
        """Dev metrics and the score early stopping maximizes."""
        ...

    def model_files(self) -> list[Path]:
        """Files besides weights and config that a model folder needs (tokenizers, ...)."""
        ...


def make_task(cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> Task:
    """Prepare the data of ``cfg.task`` (training tokenizers etc. into ``run_dir`` the first time)."""
    if cfg.task == "ctc":
        from transduce.train.ctc_task import CTCTask

        return CTCTask(cfg, run_dir, log)
    from transduce.train.translation_task import TranslationTask

    return TranslationTask(cfg, run_dir, log)
