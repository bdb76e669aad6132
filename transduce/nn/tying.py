"""Tied weights: which state-dict names are another name's tensor (saved once, re-tied on build)."""

from __future__ import annotations

from torch import nn


def shared_tensor_names(model: nn.Module) -> set[str]:
    """State-dict names whose tensor already appeared under an earlier name (tied weights)."""
    seen: set[int] = set()
    aliases = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.data_ptr() in seen:
            aliases.add(name)
        seen.add(tensor.data_ptr())
    return aliases
