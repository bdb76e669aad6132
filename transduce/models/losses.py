"""Label-smoothed cross-entropy over logits, the loss a model's own ``attention_loss`` needs (the trainer's
fused, chunked version is ``transduce/train/loss.py``).

Smoothing spreads ``epsilon`` uniformly over the whole vocabulary (the ``F.cross_entropy(label_smoothing=...)``
definition): loss = (1 - eps) * nll + eps * mean_v(-log p_v). Dimension letters: B batch, T steps, V vocabulary,
N real (non-padding) tokens.
"""

from __future__ import annotations

from torch import Tensor


def chunk_stats(logits: Tensor, target: Tensor, epsilon: float) -> tuple[Tensor, Tensor, Tensor]:
    """logits (n, V), target (n,) -> per-row smoothed loss, nll and log-sum-exp, each (n,)."""
    lse = logits.logsumexp(dim=-1)  # (n,)
    nll = lse - logits.gather(1, target[:, None]).squeeze(1)
    smooth = lse - logits.mean(dim=-1)
    return (1.0 - epsilon) * nll + epsilon * smooth, nll, lse


def label_smoothed_nll(
    logits: Tensor, target: Tensor, *, epsilon: float, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """logits (B, T, V), target (B, T) -> (smoothed loss sum, nll sum), fp32 scalars (autograd)."""
    real = (target != ignore_index).flatten()
    flat = logits.flatten(0, 1)[real].float()  # (N, V)
    loss, nll, _ = chunk_stats(flat, target.flatten()[real], epsilon)
    return loss.sum(), nll.sum().detach()
