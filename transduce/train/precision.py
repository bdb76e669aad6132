"""Numeric precision of training as one small component: an autocast context and, for fp16,
a dynamic loss scaler whose overflowing steps are skipped (and reported) instead of applied.

fp32: no autocast. bf16: autocast to bfloat16 (same exponent range as fp32: no scaler needed).
fp16: autocast to float16 + ``torch.amp.GradScaler`` (``ShardedGradScaler`` under FSDP).
Parameters and optimizer state stay fp32 in every mode (master weights).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from transduce.config import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")


class Precision:
    def __init__(self, name: str, device_type: str, *, sharded: bool = False) -> None:
        if name not in PRECISIONS:
            raise ConfigError(f"train.precision: {name!r} is not one of {', '.join(PRECISIONS)}")
        self.name = name
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        self.autocast: AbstractContextManager = (
            torch.autocast(device_type, dtype=dtypes[name]) if name in dtypes else nullcontext())
        self.scaler: Any = None
        if name == "fp16":
            if sharded:
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

                self.scaler = ShardedGradScaler(device_type)
            else:
                self.scaler = torch.amp.GradScaler(device_type)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[Tensor], clip_norm: float) -> bool:
        """Unscale, clip, step. False when fp16 gradients overflowed: the step was skipped and the
        scale lowered."""
        if self.scaler is None:
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            return True
        self.scaler.unscale_(optimizer)
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)  # skips the step when any gradient is inf/NaN
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scale only drops after an overflow

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers (loads with ``torch.load(weights_only=True)``)."""
        return dict(self.scaler.state_dict()) if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
