"""Learning-rate schedules as plain functions of the update number, and the optimizer of an ``optim`` section."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from transduce.config import ConfigError, OptimConfig


def make_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter], *, foreach: bool) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params``; ``foreach``: one multi-tensor kernel per Adam operation instead of a Python
    loop over the parameters (PyTorch picks it by default on CUDA only; the same arithmetic as the loop)."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if cfg.name not in kinds:
        raise ConfigError(f"optim.name: unknown optimizer {cfg.name!r}; choose adam or adamw")
    return kinds[cfg.name](list(params), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,  # type: ignore[arg-type]
                           weight_decay=cfg.weight_decay, foreach=foreach)


def learning_rate(cfg: OptimConfig, update: int) -> float:
    """Linear warmup from ``warmup_init_lr`` to ``lr``, then inverse square root (fairseq) or
    constant."""
    if cfg.schedule not in ("inverse_sqrt", "constant"):
        raise ConfigError(f"optim.schedule: unknown schedule {cfg.schedule!r} (inverse_sqrt, constant)")
    if cfg.warmup > 0 and update < cfg.warmup:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * update / cfg.warmup
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * (max(cfg.warmup, 1) / max(update, 1)) ** 0.5
    return cfg.lr
