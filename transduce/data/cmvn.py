"""Global mean and variance normalization (Z-score) of features, with statistics that ship with the model.

Dimensions: T: frames, F: feature bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class CMVNStats:
    """Running per-bin sums over frames, accumulated in float64.

    ``std`` is the population standard deviation (``torch.std(..., correction=0)``) with the variance
    floored at ``var_floor`` so constant bins do not divide by zero.
    """

    def __init__(self, num_features: int, *, var_floor: float = 1e-5) -> None:
        self.sum = torch.zeros(num_features, dtype=torch.float64)
        self.sum_sq = torch.zeros(num_features, dtype=torch.float64)
        self.count = 0
        self.var_floor = var_floor

    def add(self, feats: torch.Tensor) -> None:
        """Accumulate (T, F) frames."""
        if feats.dim() != 2 or feats.size(1) != self.sum.numel():
            raise ValueError(f"expected (T, {self.sum.numel()}) features, got shape {tuple(feats.shape)}")
        x = feats.detach().to("cpu", torch.float64)
        self.sum += x.sum(dim=0)
        self.sum_sq += x.square().sum(dim=0)
        self.count += x.size(0)

    def merge(self, other: CMVNStats) -> None:
        """Add another accumulator's sums (e.g. from another worker or rank)."""
        if other.sum.numel() != self.sum.numel():
            raise ValueError(f"cannot merge stats of {other.sum.numel()} bins into {self.sum.numel()}")
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.count += other.count

    @property
    def mean(self) -> torch.Tensor:
        """(F,) float32 per-bin mean."""
        self._check_nonempty()
        return (self.sum / self.count).float()

    @property
    def std(self) -> torch.Tensor:
        """(F,) float32 per-bin standard deviation, variance floored at ``var_floor``."""
        self._check_nonempty()
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.square()).clamp_min(self.var_floor)
        return var.sqrt().float()

    def _check_nonempty(self) -> None:
        if self.count == 0:
            raise ValueError("CMVN statistics are empty: no frames were added")

    def to_dict(self) -> dict[str, list[float] | int | float]:
        """Plain Python types, for JSON and for checkpoints loaded with ``weights_only=True``."""
        return {
            "sum": self.sum.tolist(),
            "sum_sq": self.sum_sq.tolist(),
            "count": self.count,
            "var_floor": self.var_floor,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CMVNStats:
        """Inverse of :meth:`to_dict`."""
        stats = cls(len(data["sum"]), var_floor=float(data.get("var_floor", 1e-5)))
        stats.sum = torch.tensor(data["sum"], dtype=torch.float64)
        stats.sum_sq = torch.tensor(data["sum_sq"], dtype=torch.float64)
        stats.count = int(data["count"])
        return stats


class GlobalCMVN(nn.Module):
    """(..., F) -> (feats - mean) / std with ``mean`` and ``istd`` as state_dict buffers (identity until loaded)."""

    mean: torch.Tensor
    istd: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("istd", torch.ones(num_features))

    @classmethod
    def from_stats(cls, stats: CMVNStats) -> GlobalCMVN:
        """Module normalizing with the accumulated statistics."""
        module = cls(stats.sum.numel())
        module.mean.copy_(stats.mean)
        module.istd.copy_(1.0 / stats.std)
        return module

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) * self.istd
