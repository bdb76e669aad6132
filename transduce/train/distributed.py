"""Data parallelism on torch.distributed: who this process is, and the few collectives the
trainer needs. Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment); with
none of those set everything here is a no-op and training is single-process.

Work split: every rank builds the same bucketed batch order (same seed); an update consumes one
*global* group of ``update_freq`` consecutive batches (rounded up to a multiple of the world
size), and rank r takes batches r, r + W, ... of it. The global batch of an update is therefore
the same whatever the world size, and so is the data position saved in checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return ctx


def wrap_for_parallel(module: torch.nn.Module, ctx: DistContext, kind: str,
                      device: torch.device) -> torch.nn.Module:
    """``module`` as is (one process), under DDP, or sharded with FSDP2 (``fully_shard`` on each
    encoder/decoder layer, then on the whole): parameters, gradients and optimizer state are
    split over ranks and gathered layer by layer."""
    if not ctx.active:
        return module
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in [*module.model.encoder.layers, *module.model.decoder.layers]:  # type: ignore[union-attr,misc]
            fully_shard(layer)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def unshard(parts: list[list[T]], total: int) -> list[T]:
    """Inverse of ``shard`` over all ranks: interleave rank lists back into one of ``total``."""
    out: list[T] = []
    for i in range(total):
        out.append(parts[i % len(parts)][i // len(parts)])
    return out
