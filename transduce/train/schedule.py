"""Learning-rate schedules as plain functions of the update number."""

from __future__ import annotations

from transduce.config import ConfigError, OptimConfig


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
