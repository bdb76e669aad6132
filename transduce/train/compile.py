"""``train.compile``: torch.compile for the training step, one layer at a time.

Every layer of a model (each element of the outermost ``nn.ModuleList``s: Transformer encoder and decoder
layers, Conformer blocks) gets a compiled forward that runs while the model trains with gradients; in eval
mode or under ``no_grad`` (dev evaluation, beam search with its caches) the same layer runs eagerly, so
decoding never waits for compilations of shapes it alone uses. Layers rather than the whole loss module:
the fused output-projection loss (``train/loss.py``) and CTC already avoid large temporaries, and layers are
where many small element-wise operations (dropout, residuals, layer norms, activations) fuse. Shapes are
marked dynamic: token-budget batches change their length every update.

Parameters, state-dict keys and checkpoints are those of the eager model. Dropout masks come from the
compiled code's own generator (seeded from torch's), so a compiled run does not replay an eager run's
dropout; with dropout 0 the two agree to rounding (tests/train/test_compile.py).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from transduce.errors import ConfigError


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot generate code for ``device`` here, or None when it can."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (CUDA code generation needs it)"
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++, c++ or clang++) on PATH (CPU code generation needs one)"
    return None


class _TrainingForward:
    """A layer's forward: compiled while the layer trains with gradients, eager otherwise."""

    def __init__(self, layer: nn.Module, eager: Callable[..., Any]) -> None:
        self.layer, self.eager = layer, eager
        self.compiled = torch.compile(eager, dynamic=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.layer.training and torch.is_grad_enabled():
            return self.compiled(*args, **kwargs)
        return self.eager(*args, **kwargs)


def _layer_lists(module: nn.Module) -> list[nn.ModuleList]:
    """The outermost ModuleLists under ``module`` (not those inside their elements)."""
    if isinstance(module, nn.ModuleList):
        return [module]
    return [found for child in module.children() for found in _layer_lists(child)]


def compile_layers(model: nn.Module, device: torch.device) -> int:
    """Give every layer of ``model`` a compiled training forward, in place; the number of layers."""
    problem = compile_problem(device)
    if problem:
        raise ConfigError(f"train.compile: torch.compile cannot be used here: {problem}; set train.compile=false")
    layers = [layer for layers in _layer_lists(model) for layer in layers]
    if not layers:
        raise ConfigError(f"train.compile: {type(model).__name__} has no layer lists to compile")
    for layer in layers:
        layer.forward = _TrainingForward(layer, layer.forward)  # type: ignore[method-assign]
    return len(layers)


class WarmupClock:
    """Times the first compiled updates against the ones after, for the warm-up line in the log."""

    def __init__(self, log: Callable[[str], None], *, first: int = 1, steady: int = 5) -> None:
        self.log, self.first, self.steady = log, first, steady
        self.times: list[float] = []
        self.started = time.perf_counter()

    def update_done(self, seconds: float) -> None:
        """Record one update's duration; log the summary once ``first + steady`` updates are in."""
        self.times.append(seconds)
        if len(self.times) != self.first + self.steady:
            return
        warm = sum(self.times[: self.first])
        steady = sorted(self.times[self.first :])[self.steady // 2]
        self.log(f"train.compile: warm-up {warm:.1f} s in the first {self.first} update(s) (graph capture and "
                 f"code generation), then a median {steady:.3f} s per update; new batch shapes may still "
                 f"compile later")
