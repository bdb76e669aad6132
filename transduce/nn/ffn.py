"""Position-wise feed-forward block."""

from __future__ import annotations

from torch import Tensor, nn


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear. (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(acts)}")
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), acts[activation](), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
