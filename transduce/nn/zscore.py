"""Masked Z-score normalization with per-feature statistics stored in the module (a modality adapter's own
normalization, so that every modality enters the shared encoder layers with zero mean and unit variance).

Dimension letters: B batch, T frames (or tokens), D features.

Training normalizes with the statistics of the batch's real frames (padding never counts) and folds them into
running buffers; evaluation normalizes with the buffers, which are saved with the weights. Either way a frame's
output does not depend on how much padding its batch has, and padded frames come out as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ZScore(nn.Module):
    """(B, T, D) and a padding mask (B, T) (True = real) -> (x - mean) / sqrt(var + eps) * weight + bias."""

    mean: Tensor
    var: Tensor

    def __init__(self, dim: int, *, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"model.zscore_momentum: must be in (0, 1], got {momentum}")
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def statistics(self, x: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (biased) variance (D,) over the real frames of x (B, T, D), in fp32."""
        weights = real[..., None].float()  # (B, T, 1)
        count = weights.sum().clamp(min=1.0)
        mean = (x.float() * weights).sum(dim=(0, 1)) / count  # (D,)
        var = ((x.float() - mean) ** 2 * weights).sum(dim=(0, 1)) / count  # (D,)
        return mean, var

    def forward(self, x: Tensor, real: Tensor) -> Tensor:
        if self.training and bool(real.any()):
            mean, var = self.statistics(x, real)
            with torch.no_grad():
                self.mean.lerp_(mean.detach(), self.momentum)
                self.var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.mean, self.var
        y = (x.float() - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias  # (B, T, D)
        return y.to(x.dtype).masked_fill(~real[..., None], 0.0)
