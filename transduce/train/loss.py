"""Label-smoothed cross-entropy, summed over real (non-padding) target tokens.

Smoothing spreads ``epsilon`` uniformly over the whole vocabulary (the
``F.cross_entropy(label_smoothing=...)`` definition): loss = (1 - eps) * nll + eps * mean_v(-log p_v).

``projected_label_smoothed_nll`` fuses the output projection with the loss and works in row
chunks with a hand-written gradient (``softmax - q``, ``q = (1 - eps) onehot + eps/V``), computed in
the forward pass while each chunk's logits are at hand: on CPU the (tokens x vocab) logits are the
biggest tensors of a small model's step, and allocating them whole costs more than the arithmetic.

``CTCLoss`` is the speech models' counterpart: CTC (plus the attention decoder's cross-entropy for hybrid
models) as one module for DDP.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transduce.models.ctc import CTCModel, attention_loss, ctc_loss
from transduce.models.losses import chunk_stats as _chunk_stats
from transduce.models.losses import label_smoothed_nll
from transduce.models.rnn import coverage_loss

__all__ = ["CTCLoss", "CoverageSequenceLoss", "SequenceLoss", "cross_entropy_reference", "label_smoothed_nll",
           "projected_label_smoothed_nll"]

CHUNK_ROWS = 512


def _softmax_minus_q(logits: Tensor, lse: Tensor, target: Tensor, epsilon: float) -> Tensor:
    """In place on ``logits`` (n, V): softmax - q."""
    grad = logits.sub_(lse[:, None]).exp_().sub_(epsilon / logits.size(1))
    grad[torch.arange(grad.size(0), device=grad.device), target] -= 1.0 - epsilon
    return grad


def _chunked(hidden: Tensor, weight: Tensor, target: Tensor, epsilon: float, want_grad: bool
             ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """hidden (N, D), weight (V, D), target (N,) -> loss sum, nll sum (fp32 scalars) and, with ``want_grad``,
    d loss / d hidden (N, D) and d loss / d weight (V, D), chunk by chunk of CHUNK_ROWS rows."""
    loss = hidden.new_zeros((), dtype=torch.float)
    nll_sum = hidden.new_zeros((), dtype=torch.float)
    grad_hidden = torch.empty_like(hidden) if want_grad else None  # (N, D)
    grad_weight = torch.zeros_like(weight, dtype=torch.float) if want_grad else None  # (V, D)
    for start in range(0, hidden.size(0), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        h = hidden[rows]  # (n, D)
        logits = (h @ weight.t()).float()  # (n, V)
        chunk_loss, nll, lse = _chunk_stats(logits, target[rows], epsilon)
        loss += chunk_loss.sum()
        nll_sum += nll.sum()
        if grad_hidden is not None and grad_weight is not None:
            g = _softmax_minus_q(logits, lse, target[rows], epsilon).to(hidden.dtype)  # (n, V)
            grad_hidden[rows] = g @ weight
            grad_weight += (g.t() @ h).float()
    return loss, nll_sum, grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype)


class _ProjectedSmoothedCE(torch.autograd.Function):
    """The loss ends the graph, so its gradient is known up to the scalar ``grad_loss`` as soon as the logits
    are: the forward computes d loss / d hidden and d loss / d weight while each chunk's logits are at hand,
    and backward only scales them. The (N, V) logits are never kept whole nor computed twice (recomputing
    them in backward cost a third of the loss's matmuls)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, target: Tensor, epsilon: float):  # type: ignore[override]
        """hidden (N, D), weight (V, D), target (N,) -> loss sum, nll sum (fp32 scalars)."""
        loss, nll_sum, grad_hidden, grad_weight = _chunked(hidden, weight, target, epsilon,
                                                           want_grad=any(ctx.needs_input_grad[:2]))
        ctx.grads = (grad_hidden, grad_weight)
        ctx.mark_non_differentiable(nll_sum)
        return loss, nll_sum

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.grads
        return (None if grad_hidden is None else grad_hidden * grad_loss,
                None if grad_weight is None else grad_weight * grad_loss, None, None)


def projected_label_smoothed_nll(
    hidden: Tensor, weight: Tensor, target: Tensor, *, epsilon: float, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """hidden (B, T, D), output weight (V, D), target (B, T) -> (loss sum, nll sum).
    Equal to ``label_smoothed_nll(hidden @ weight.T, target)``."""
    real = (target != ignore_index).flatten()  # (B T,)
    h = hidden.flatten(0, 1)[real]  # (N, D)
    target = target.flatten()[real]  # (N,)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _ProjectedSmoothedCE.apply(h, weight, target, epsilon)
    loss, nll, _, _ = _chunked(h, weight, target, epsilon, want_grad=False)  # evaluation: no gradients
    return loss, nll


class SequenceLoss(torch.nn.Module):
    """A model and its training loss as one module, so that DDP sees the whole computation in
    ``forward``: (src, src_lens, tgt_in, tgt_out) -> (loss sum, nll sum)."""

    def __init__(self, model: Any, *, epsilon: float, ignore_index: int,
                 autocast: Any = None) -> None:
        super().__init__()
        self.model, self.epsilon, self.ignore_index = model, epsilon, ignore_index
        self.autocast = autocast if autocast is not None else nullcontext()

    def forward(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast:
            hidden = self.model.features(src, src_lens, tgt_in)  # (B, T, D)
        return projected_label_smoothed_nll(hidden, self.model.output_weight, tgt_out,
                                            epsilon=self.epsilon, ignore_index=self.ignore_index)


class CoverageSequenceLoss(torch.nn.Module):
    """``SequenceLoss`` plus ``weight`` x the See et al. 2017 coverage loss (``models.rnn.coverage_loss``)
    over real target steps, for models with ``features_with_attention(src, src_lens, tgt_in) ->
    (hidden (B, T, D), weights (B, T, S))``. Returns (loss sum + weight x coverage sum, nll sum):
    the trainer normalizes both terms by the batch's target tokens."""

    def __init__(self, model: Any, *, epsilon: float, ignore_index: int, weight: float,
                 autocast: Any = None) -> None:
        super().__init__()
        self.model, self.epsilon, self.ignore_index, self.weight = model, epsilon, ignore_index, weight
        self.autocast = autocast if autocast is not None else nullcontext()

    def forward(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast:
            hidden, weights = self.model.features_with_attention(src, src_lens, tgt_in)  # (B, T, D), (B, T, S)
        loss, nll = projected_label_smoothed_nll(hidden, self.model.output_weight, tgt_out,
                                                 epsilon=self.epsilon, ignore_index=self.ignore_index)
        return loss + self.weight * coverage_loss(weights.float(), tgt_out != self.ignore_index), nll


class CTCLoss(torch.nn.Module):
    """A CTC (or hybrid CTC/attention) model and its loss as one module for DDP:
    (feats, feat_lens, targets, target_lens) -> (loss sum, nll sum detached), where a hybrid model's
    loss is ctc_weight * CTC + (1 - ctc_weight) * label-smoothed attention cross-entropy."""

    def __init__(self, model: CTCModel, autocast: AbstractContextManager, *, ctc_weight: float = 1.0,
                 reverse_weight: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.autocast = model, autocast
        self.ctc_weight = ctc_weight if model.decoder is not None else 1.0
        self.reverse_weight, self.label_smoothing = reverse_weight, label_smoothing

    def forward(self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast:
            out, out_lens = self.model.encode(feats, feat_lens)
            log_probs = self.model.ctc_log_probs(out)
        ctc = ctc_loss(log_probs, out_lens, targets, target_lens)
        w = self.ctc_weight
        if w == 1.0:
            return ctc, ctc.detach()
        with self.autocast:
            att, att_nll = attention_loss(self.model, out, out_lens, targets, target_lens,
                                          self.label_smoothing, self.reverse_weight)
        return w * ctc + (1 - w) * att, (w * ctc + (1 - w) * att_nll).detach()


def cross_entropy_reference(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> Tensor:
    """The same quantity through ``F.cross_entropy`` (used by tests)."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), target.flatten(), ignore_index=ignore_index,
        label_smoothing=epsilon, reduction="sum",
    )
