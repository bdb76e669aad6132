"""Data parallelism on torch.distributed: who this process is, and the few collectives the
trainer needs. Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment); with
none of those set everything here is a no-op and training is single-process.

Work split: every rank builds the same bucketed batch order (same seed); an update consumes one
*global* group of ``update_freq`` consecutive batches (rounded up to a multiple of the world
size), and rank r takes batches r, r + W, ... of it. The global batch of an update is therefore
the same whatever the world size, and so is the data position saved in checkpoints.

Model parallelism (``train.parallel`` tp: train/tensor_parallel.py, pp: train/pipeline.py) splits the model
instead: every rank takes every batch, and ``DistContext.data()`` is the world-1 context that shards them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from transduce.errors import ConfigError

T = TypeVar("T")


PARALLEL = ("ddp", "fsdp", "tp", "pp")
"""``train.parallel`` values: data parallel (ddp, fsdp) or model parallel (tp: train/tensor_parallel.py,
pp: train/pipeline.py), where every rank works on the same batches."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    data_parallel: bool = True
    """Ranks split the batches (ddp, fsdp); False: model parallel, every rank sees every batch."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        """This process's index among the ranks that split the data (0 under model parallelism)."""
        return self.rank if self.data_parallel else 0

    @property
    def dp_world(self) -> int:
        """How many ways the batches are split (1 under model parallelism)."""
        return self.world if self.data_parallel else 1

    def data(self) -> DistContext:
        """The context that shards batches and sums their losses: this one, or under model parallelism one
        of world 1 (no collectives: every rank already has every batch's result)."""
        return self if self.data_parallel else DistContext()

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share: items r, r + W, r + 2W, ..."""
        return items[self.rank :: self.world]

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(device_type: str, parallel: str = "ddp") -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA), if any."""
    if parallel not in PARALLEL:
        raise ConfigError(f"train.parallel: unknown {parallel!r} (known: {', '.join(PARALLEL)})")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                      data_parallel=parallel in ("ddp", "fsdp"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return ctx


def wrap_for_parallel(module: nn.Module, ctx: DistContext, kind: str, device: torch.device, *,
                      model: nn.Module) -> nn.Module:
    """``module`` (the loss module around ``model``) as is (one process), under DDP, split by tensor parallelism
    (``model`` in place, see train/tensor_parallel.py), or sharded with
    FSDP2: ``fully_shard`` on each of ``model.fsdp_units()``, then on ``module`` (the root unit takes every
    other parameter). Parameters, gradients and optimizer state are split over ranks and gathered
    unit by unit."""
    if not ctx.active or kind == "pp":  # pp: the trainer's Pipeline (train/pipeline.py) runs the stages
        return module
    if kind == "tp":
        from transduce.train.tensor_parallel import parallelize

        parallelize(model, ctx, device)
        return module
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in fsdp_units(model):
            fully_shard(unit)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """``model.fsdp_units()``: the modules its family shards one at a time, checked to be disjoint
    submodules that share no parameter with the rest of the model (FSDP would shard a shared parameter
    twice and untie it). A model family without the method is a ConfigError naming its class."""
    method = getattr(model, "fsdp_units", None)
    if not callable(method):
        raise ConfigError(f"train.parallel: fsdp needs the model to name the modules to shard, and "
                          f"{type(model).__name__} has no fsdp_units(); use train.parallel: ddp")
    units: list[nn.Module] = method()
    paths = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
    owner: dict[int, str] = {}  # id(parameter) -> path of the unit that holds it
    for unit in units:
        if id(unit) not in paths:
            raise ValueError(f"{type(model).__name__}.fsdp_units(): a {type(unit).__name__} that is not a submodule")
        for param in unit.parameters():
            if id(param) in owner:
                raise ValueError(f"{type(model).__name__}.fsdp_units(): units {owner[id(param)]} and "
                                 f"{paths[id(unit)]} share a parameter")
            owner[id(param)] = paths[id(unit)]
    for name, param in model.named_parameters(remove_duplicate=False):
        unit_path = owner.get(id(param))
        if unit_path is not None and not name.startswith(unit_path + "."):
            raise ValueError(f"{type(model).__name__}.fsdp_units(): {name} is the same parameter as one in "
                             f"unit {unit_path}; keep shared and tied parameters out of the units")
    return units


def skip_grad_sync(module: nn.Module, skip: bool) -> AbstractContextManager:
    """While ``skip``: backward accumulates this rank's gradients without reducing them over ranks
    (every micro-batch of an update but the rank's last). DDP's ``no_sync``; FSDP2 keeps unsharded
    gradients until a backward with sync on."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if skip and isinstance(module, DistributedDataParallel):
        return module.no_sync()
    if skip and isinstance(module, FSDPModule):
        return _fsdp_no_sync(module)
    return nullcontext()


@contextmanager
def _fsdp_no_sync(module: Any) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def unshard(parts: list[list[T]], total: int) -> list[T]:
    """Inverse of ``shard`` over all ranks: interleave rank lists back into one of ``total``."""
    out: list[T] = []
    for i in range(total):
        out.append(parts[i % len(parts)][i // len(parts)])
    return out


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_``, also when tensor parallelism mixes split (DTensor) and whole
    gradients, which its multi-tensor norm cannot take: there each split gradient's norm is completed over the
    ranks and the same formula applied (scale by max_norm / (total + 1e-6) when below 1)."""
    from torch.distributed.tensor import DTensor

    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]
    split = [isinstance(g, DTensor) for g in grads]
    if all(split) or not any(split):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    norms = [torch.linalg.vector_norm(g) for g in grads]
    whole = [n.full_tensor() if isinstance(n, DTensor) else n for n in norms]
    total = torch.linalg.vector_norm(torch.stack(whole)).item()
    coef = min(1.0, max_norm / (total + 1e-6))
    for g in grads:
        g.mul_(coef)
