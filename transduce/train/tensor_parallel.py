"""Tensor parallelism with DTensor (``train.parallel: tp`` under torchrun), Megatron-style.

A model family names what to split in ``model.tp_plan()``: module path -> ``colwise`` (a Linear's output
features split over ranks), ``colwise_fused`` (a Linear whose output is two projections side by side, the
key|value halves of ``kv_proj``: each half split so) or ``rowwise`` (input features split; the partial outputs
are summed with one all-reduce); parameter path -> ``rows`` (a per-head parameter, e.g. the Conformer's position
biases (H, E): each rank holds its heads' rows, which the module reads with ``to_local()``) or ``heads_shared``
(a parameter all heads use, e.g. Shaw's relative key table: whole on every rank, each rank's gradient covers its
heads only, so a gradient hook sums it over ranks). For attention,
q_proj and kv_proj colwise give each rank whole heads (heads / W of them: attention reshapes by head size, not
head count) and out_proj rowwise sums them; for a feed-forward block, the first Linear colwise and the second
rowwise. One all-reduce per block forward, one per block backward. Everything else (embeddings, tied output
projection, norms, positions, the Conformer's convolution modules and front end) is replicated and computed
the same on every rank; its gradients arrive whole, because DTensor all-reduces the partial input gradient of
every colwise layer.

Every rank sees the same batches: the data-parallel world is 1 (``DistContext.data_parallel`` False).
Parameters are DTensors; ``full_tensor()`` and the ``torch.distributed.checkpoint.state_dict`` helpers give the
whole, unpermuted tensors, so checkpoints are plain full state dicts loadable by one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel, parallelize_module
from torch.distributed.tensor.placement_types import _StridedShard

from transduce.errors import ConfigError
from transduce.train.distributed import DistContext


class FusedColwiseParallel(ColwiseParallel):
    """ColwiseParallel for a Linear whose output is ``parts`` equal projections side by side: the rows of each
    part are split over ranks, so rank r holds [k_r | v_r] of a (2D, D) key|value matrix and its output chunks
    into its own heads' keys and values. The placement is a strided shard (``_StridedShard``: split into
    ``parts`` first, then each part over the ranks), so the DTensor's global view is the unpermuted matrix."""

    def __init__(self, parts: int) -> None:
        super().__init__(output_layouts=_StridedShard(-1, split_factor=parts))
        self.parts = parts

    def _partition_linear_fn(self, name: str, module: nn.Module, device_mesh: DeviceMesh) -> None:
        for param_name, param in module.named_parameters():
            placement = _StridedShard(0, split_factor=self.parts)
            module.register_parameter(param_name, nn.Parameter(distribute_tensor(param, device_mesh, [placement]),
                                                               requires_grad=param.requires_grad))


def _style(kind: str) -> ParallelStyle:
    if kind == "colwise":
        return ColwiseParallel()
    if kind == "rowwise":
        return RowwiseParallel()
    if kind == "colwise_fused":
        return FusedColwiseParallel(2)
    raise ValueError(f"tp_plan(): unknown split {kind!r} (known: colwise, colwise_fused, rowwise)")


def tp_plan(model: nn.Module, world: int) -> dict[str, str]:
    """``model.tp_plan()``, checked to split evenly over ``world`` ranks: attention heads, and the features each
    split Linear divides. A ConfigError names the model field to change."""
    method = getattr(model, "tp_plan", None)
    if not callable(method):
        raise ConfigError(f"train.parallel: tp needs the model to name the layers to split, and "
                          f"{type(model).__name__} has no tp_plan(); use train.parallel: ddp or fsdp")
    plan: dict[str, str] = method()
    for path, module in model.named_modules():
        heads = getattr(module, "heads", None)
        if isinstance(heads, int) and f"{path}.q_proj" in plan and heads % world:
            raise ConfigError(f"train.parallel: tp over {world} processes gives each whole attention heads, but "
                              f"{path} has {heads}; set model.heads to a multiple of {world}")
    for path, kind in plan.items():
        if kind == "heads_shared":
            continue
        if kind == "rows":
            rows = model.get_parameter(path).size(0)
            if rows % world:
                raise ConfigError(f"train.parallel: tp over {world} processes splits {path} ({rows} heads); set "
                                  f"model.heads to a multiple of {world}")
            continue
        linear = model.get_submodule(path)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{type(model).__name__}.tp_plan(): {path} is a {type(linear).__name__}, not a Linear")
        size = linear.in_features if kind == "rowwise" else linear.out_features // (2 if kind == "colwise_fused" else 1)
        if size % world:
            raise ConfigError(f"train.parallel: tp over {world} processes splits {path} ({size} features), which "
                              f"is not a multiple of {world}; change model.ffn_dim or model.dim")
    return plan


def parallelize(model: nn.Module, ctx: DistContext, device: torch.device) -> DeviceMesh:
    """Split ``model`` in place over the ``ctx.world`` ranks as its ``tp_plan()`` says; the replicated
    parameters and buffers take rank 0's values. Returns the device mesh."""
    plan = tp_plan(model, ctx.world)
    mesh = init_device_mesh(device.type, (ctx.world,))
    styles = {path: _style(kind) for path, kind in plan.items() if kind not in ("rows", "heads_shared")}
    parallelize_module(model, mesh, styles)
    for path in (path for path, kind in plan.items() if kind == "rows"):
        owner, _, name = path.rpartition(".")
        module, param = model.get_submodule(owner), model.get_parameter(path)
        module.register_parameter(name, nn.Parameter(distribute_tensor(param, mesh, [Shard(0)]),
                                                     requires_grad=param.requires_grad))
    for path in (path for path, kind in plan.items() if kind == "heads_shared"):
        model.get_parameter(path).register_hook(_sum_over_ranks)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if not isinstance(tensor, DTensor):
                dist.broadcast(tensor, src=0)
    return mesh


def _sum_over_ranks(grad: torch.Tensor) -> torch.Tensor:
    """Gradient hook of a ``heads_shared`` parameter: this rank's heads' part -> the whole gradient."""
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad
