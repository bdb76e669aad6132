"""Pipeline parallelism (``train.parallel: pp`` under torchrun) for the Transformer encoder-decoder.

The encoder and decoder layers, in that order, are cut into one contiguous stage per rank (sizes differing by
at most one); a stage also holds the source embedding if it has encoder layer 0, the encoder's final norm if it
has the last encoder layer, the target embedding if it has decoder layer 0, and the decoder's final norm and
output projection if it has the last layer (the loss is computed there). Each rank keeps only its stage's
parameters: the others are replaced by meta tensors (no memory). A weight several stages hold (the embedding
shared by source, target and output) has its gradient summed over them before the optimizer step, so its
copies stay equal.

Schedule: GPipe with point-to-point send/recv, written out here because ``torch.distributed.pipelining``
fixes activation shapes at its first step, while translation batches change length from batch to batch. Every
rank has the whole batch (the data-parallel world is 1), so lengths, masks and target tokens are local and only
hidden states travel: the encoder states (B, S, D) from the first stage on (the memory every decoder layer
attends to) and the decoder states (B, T, D) once the decoder has begun, in fp32; their gradients travel back.
A batch is split into ``train.microbatches`` along B; all microbatches go forward, then all go backward
(gradients accumulate), and the loss is normalized by the update's target tokens as in one process.

Dimension letters: B batch (microbatch), S source length, T target length, D model size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from transduce.errors import ConfigError
from transduce.models.transformer import TransformerSeq2Seq
from transduce.nn.masks import attention_mask, padding_mask
from transduce.train.distributed import DistContext
from transduce.train.loss import SequenceLoss, projected_label_smoothed_nll


def split_layers(layers: int, stages: int) -> list[range]:
    """Contiguous ranges of ``layers`` layer indices, one per stage, the first ones one longer when uneven."""
    if stages > layers:
        raise ConfigError(f"train.parallel: pp over {stages} processes needs at least {stages} layers, and the "
                          f"model has {layers} (model.encoder_layers + model.decoder_layers)")
    size, extra = divmod(layers, stages)
    bounds = [0]
    for s in range(stages):
        bounds.append(bounds[-1] + size + (s < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


class TransformerStage(nn.Module):
    """One stage of a ``TransformerSeq2Seq``: encoder layers ``enc`` and decoder layers ``dec`` (indices), with
    the embeddings, norms and output projection that go with them (see the module docstring)."""

    def __init__(self, model: TransformerSeq2Seq, layers: range) -> None:
        super().__init__()
        n_enc, n_dec = len(model.encoder.layers), len(model.decoder.layers)
        self.enc = [i for i in layers if i < n_enc]
        self.dec = [i - n_enc for i in layers if i >= n_enc]
        self.model = model
        self.embeds_src, self.embeds_tgt = 0 in self.enc, 0 in self.dec
        self.ends_encoder = n_enc - 1 in self.enc
        self.last = n_dec - 1 in self.dec
        self.receives_dec = layers.start > n_enc  # the decoder began on an earlier stage
        self.sends_dec = bool(self.dec) and not self.last

    def modules_held(self) -> list[nn.Module]:
        m = self.model
        held: list[nn.Module] = [m.encoder.layers[i] for i in self.enc] + [m.decoder.layers[i] for i in self.dec]
        held += [m.encoder.embed] if self.embeds_src else []
        held += [m.encoder.final_norm] if self.ends_encoder else []
        held += [m.decoder.embed] if self.embeds_tgt else []
        held += [m.decoder.final_norm, m.decoder.output] if self.last else []
        return held

    def forward(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor, enc: Tensor | None, dec: Tensor | None
                ) -> tuple[Tensor, Tensor | None]:
        """Microbatch tokens src (B, S), src_lens (B,), tgt_in (B, T) and the received states -> encoder states
        or memory (B, S, D) and decoder states (B, T, D) (None before the decoder begins; final-normed features
        on the last stage)."""
        m = self.model
        mask = attention_mask(padding_mask(src_lens, src.size(1)))  # (B, 1, 1, S)
        x = m.encoder.embed(src) if self.embeds_src else enc
        assert x is not None
        for i in self.enc:
            x = m.encoder.layers[i](x, mask)
        if self.ends_encoder:
            x = m.encoder.final_norm(x)
        y = m.decoder.embed(tgt_in) if self.embeds_tgt else dec
        for i in self.dec:
            y = m.decoder.layers[i](y, x, mask)[0]
        if self.last:
            y = m.decoder.final_norm(y)
        return x, y


@dataclass(frozen=True)
class SharedWeight:
    """A parameter held by several stages, and the process group of their ranks."""

    param: nn.Parameter
    group: dist.ProcessGroup | None
    """None: all ranks."""
    owners: int


def keep_stage(model: TransformerSeq2Seq, ctx: DistContext) -> tuple[TransformerStage, list[SharedWeight]]:
    """This rank's stage of ``model``; every parameter outside it becomes a meta tensor. Also the parameters
    several stages hold (collective: every rank makes the same process groups)."""
    if not isinstance(model, TransformerSeq2Seq):
        raise ConfigError(f"train.parallel: pp splits the Transformer encoder-decoder, not a "
                          f"{type(model).__name__}; use ddp, fsdp or tp")
    ranges = split_layers(len(model.encoder.layers) + len(model.decoder.layers), ctx.world)
    stages = [TransformerStage(model, r) for r in ranges]
    owners: dict[int, list[int]] = {}
    for s, stage in enumerate(stages):
        for p in {id(p): p for mod in stage.modules_held() for p in mod.parameters()}.values():
            owners.setdefault(id(p), []).append(s)
    shared = []
    for p in model.parameters():
        ranks = owners.get(id(p), [])
        group = dist.new_group(ranks) if len(ranks) > 1 and len(ranks) < ctx.world else None
        if len(ranks) > 1 and ctx.rank in ranks:
            shared.append(SharedWeight(p, group, len(ranks)))
    mine = {pid for pid, ranks in owners.items() if ctx.rank in ranks}
    meta: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, held in list(module._parameters.items()):
            if held is not None and id(held) not in mine:
                if id(held) not in meta:
                    meta[id(held)] = nn.Parameter(torch.empty_like(held, device="meta"), requires_grad=False)
                module._parameters[name] = meta[id(held)]
    return stages[ctx.rank], shared


class Pipeline:
    """The GPipe schedule of one batch on this rank's stage: ``step`` runs forward and backward over the
    microbatches and returns the batch's loss and nll sums (on every rank)."""

    def __init__(self, loss: nn.Module, ctx: DistContext, *, microbatches: int, precision: str = "fp32") -> None:
        """``loss``: the task's loss module around the model, a ``SequenceLoss`` (its smoothing, padding id and
        autocast are used here)."""
        if microbatches < 1:
            raise ConfigError(f"train.microbatches: must be >= 1, got {microbatches}")
        if precision == "fp16":
            raise ConfigError("train.precision: fp16 (loss scaling) is not supported with train.parallel pp")
        if not isinstance(loss, SequenceLoss):
            raise ConfigError(f"train.parallel: pp computes the label-smoothed cross-entropy of a translation "
                              f"Transformer, not {type(loss).__name__}; use ddp, fsdp or tp")
        model = loss.model
        self.device = next(model.parameters()).device
        self.stage, self.shared = keep_stage(model, ctx)
        self.model, self.ctx, self.microbatches = model, ctx, microbatches
        self.epsilon, self.ignore_index, self.autocast = loss.epsilon, loss.ignore_index, loss.autocast
        self.dim = model.encoder.embed.embedding.embedding_dim
        self._sends: list[tuple[dist.Work, Tensor]] = []  # a tensor in flight stays referenced until sent

    def step(self, inputs: tuple[Tensor, ...], tokens: int, *, finish: bool) -> tuple[Tensor, Tensor]:
        """Forward and backward of a batch (src, src_lens, tgt_in, tgt_out), the loss divided by ``tokens``
        (the update's); forward only under ``torch.no_grad()``. ``finish``: the update's last batch: sum the
        shared weights' gradients over stages."""
        pieces = [torch.tensor_split(t, self.microbatches) for t in inputs]
        micro = [mb for mb in zip(*pieces, strict=True) if mb[0].size(0) > 0]
        kept = [self._forward(mb, tokens) for mb in micro]
        for received, outputs in kept if torch.is_grad_enabled() else []:  # no_grad: the loss only
            self._backward(received, outputs)
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        if self.stage.last:
            sums += torch.tensor([sum(float(o[1]) for _, o in kept), sum(float(o[2]) for _, o in kept)],
                                 dtype=torch.float64, device=self.device)
        for work, _ in self._sends:
            work.wait()
        self._sends = []
        dist.broadcast(sums, src=self.ctx.world - 1)
        if finish:
            for shared in self.shared:
                if shared.param.grad is not None:
                    dist.all_reduce(shared.param.grad, group=shared.group)
        return sums[0], sums[1]

    def _recv(self, shape: tuple[int, ...], src: int) -> Tensor:
        buffer = torch.empty(shape, dtype=torch.float32, device=self.device)
        dist.recv(buffer, src=src)
        return buffer

    def _send(self, t: Tensor, dst: int) -> None:
        t = t.detach().float().contiguous()
        work = dist.isend(t, dst=dst)
        assert work is not None
        self._sends.append((work, t))

    def _forward(self, mb: tuple[Tensor, ...], tokens: int) -> tuple[list[Tensor], list[Tensor]]:
        """One microbatch forward: received states (to send their gradients back) and outputs: the sent states,
        or on the last stage (loss / tokens, loss sum, nll sum)."""
        src, src_lens, tgt_in, tgt_out = mb
        b, s, t = src.size(0), src.size(1), tgt_in.size(1)
        prev = self.ctx.rank - 1
        enc_in = self._recv((b, s, self.dim), prev).requires_grad_() if self.ctx.rank > 0 else None
        dec_in = self._recv((b, t, self.dim), prev).requires_grad_() if self.stage.receives_dec else None
        with self.autocast:
            enc, dec = self.stage(src, src_lens, tgt_in, enc_in, dec_in)
        received = [x for x in (enc_in, dec_in) if x is not None]
        if self.stage.last:
            assert dec is not None
            loss, nll = projected_label_smoothed_nll(dec, self.model.output_weight, tgt_out, epsilon=self.epsilon,
                                                     ignore_index=self.ignore_index)
            return received, [loss / tokens, loss.detach(), nll.detach()]
        outputs = [enc.float()] + ([dec.float()] if self.stage.sends_dec and dec is not None else [])
        for out in outputs:
            self._send(out, self.ctx.rank + 1)
        return received, outputs

    def _backward(self, received: list[Tensor], outputs: list[Tensor]) -> None:
        if self.stage.last:
            outputs[0].backward()
        else:
            grads = [self._recv(tuple(out.shape), self.ctx.rank + 1) for out in outputs]
            torch.autograd.backward(outputs, grads)
        for x in received:
            self._send(x.grad if x.grad is not None else torch.zeros_like(x), self.ctx.rank - 1)

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale every stage's gradients so that the norm of the whole model's gradient is at most ``max_norm``
        (as ``torch.nn.utils.clip_grad_norm_`` in one process; a shared weight counted once); 0 (off) does
        nothing. Returns 0.0: the clipping left to do."""
        if max_norm <= 0:
            return 0.0
        shared = {id(s.param): s.owners for s in self.shared}
        square = torch.zeros((), dtype=torch.float64, device=self.device)
        params = [p for p in self.model.parameters() if p.grad is not None]
        for p in params:
            square += p.grad.double().square().sum() / shared.get(id(p), 1)  # type: ignore[union-attr]
        dist.all_reduce(square)
        coef = min(1.0, max_norm / (float(square.sqrt()) + 1e-6))
        for p in params:
            p.grad.mul_(coef)  # type: ignore[union-attr]
        return 0.0


def gather_model_state(model: nn.Module, ctx: DistContext) -> dict[str, Any]:
    """The whole model's state dict, keyed as one process saves it, gathered from every stage onto every rank
    (collective; tensors on the CPU). Evaluation needs only this, not the optimizer's state."""
    mine = {k: v.cpu() for k, v in model.state_dict().items() if not v.is_meta}  # outside the stage: meta
    whole: dict[str, Any] = {}
    for part in ctx.gather(mine):
        whole.update(part)
    return whole


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole model's and optimizer's state dicts, keyed by parameter name as one process saves them,
    gathered from every stage onto every rank (collective; tensors on the CPU)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    optim_state: Any = get_optimizer_state_dict(model, optimizer)  # FQN-keyed, the stage's parameters only
    state = {k: {n: v.cpu() if isinstance(v, Tensor) else v for n, v in s.items()}
             for k, s in optim_state["state"].items()}
    parts = ctx.gather((state, [g["params"] for g in optim_state["param_groups"]]))
    whole_state: dict[str, Any] = {}
    for part_state, _ in parts:
        whole_state.update(part_state)
    order = {name: i for i, name in enumerate(n for n, _ in model.named_parameters())}
    groups = []
    for i, group in enumerate(optim_state["param_groups"]):
        names = {name for _, part_groups in parts for name in part_groups[i]}
        groups.append({**group, "params": sorted(names, key=order.__getitem__)})
    return gather_model_state(model, ctx), {"state": whole_state, "param_groups": groups}
