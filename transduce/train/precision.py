"""Numeric precision of training as one small component: an autocast context and, for fp16,
a dynamic loss scaler whose overflowing steps are skipped (and reported) instead of applied.

fp32: no autocast. bf16: autocast to bfloat16 (same exponent range as fp32: no scaler needed).
fp16: autocast to float16 + ``torch.amp.GradScaler`` (``ShardedGradScaler`` under FSDP).
Parameters and optimizer state stay fp32 in every mode (master weights).

auto: bf16 where the device computes it natively (CUDA with bf16; CPUs with AMX or AVX512-BF16) and, on a
CPU, where a probe (one of our Transformer layers' forward + backward, ~0.1 s) runs faster in bf16 than in
fp32; fp32 elsewhere. Native bf16 instructions alone do not make a CPU train faster: on an AVX512-BF16 EPYC a
bf16 matmul ran 2.2x fp32 but PyTorch's CPU attention kernel 6-20x slower, and training in bf16 ran at 0.24x
fp32 until ``nn.attention.attend`` kept attention in fp32 (1.14x since). ``choose_precision`` decides from a
``Hardware`` record and the probe's result (pure, testable with made-up facts); ``detect_hardware`` gathers the
real facts once at start. Forcing bf16 on a CPU without native support works but is emulated (a bf16 matmul
ran ~600x slower than fp32 on an AVX2-only EPYC), so ``resolve_precision`` warns with the slowdown
measured on the spot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transduce.config import ConfigError
from transduce.nn.transformer import EncoderLayer
from transduce.train.distributed import clip_grad_norm

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = (*PRECISIONS, "auto")
MIN_SPEEDUP = 1.1
"""auto takes bf16 on a CPU when its probe step runs at least this much faster than fp32 (a margin for noise)."""


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """The facts that decide whether bf16 is native where training runs."""

    device_type: str
    """torch device type: cpu, cuda, ..."""
    cpu_capability: str = ""
    """``torch.backends.cpu.get_cpu_capability()``: AVX2, AVX512, DEFAULT, SVE256, ..."""
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    """x86 feature flags as /proc/cpuinfo spells them (avx512_bf16, amx_bf16, amx_tile, ...)."""
    cuda_bf16: bool = False
    """The CUDA device computes bf16 natively (``torch.cuda.is_bf16_supported(including_emulation=False)``)."""


def native_bf16(hw: Hardware) -> str:
    """The unit computing bf16 natively on ``hw``'s device ("AMX", "AVX512-BF16", "CUDA"), "" when none."""
    if hw.device_type == "cuda":
        return "CUDA" if hw.cuda_bf16 else ""
    if hw.device_type != "cpu":
        return ""
    if {"amx_bf16", "amx_tile"} <= hw.cpu_flags:
        return "AMX"
    return "AVX512-BF16" if "avx512_bf16" in hw.cpu_flags else ""


def choose_precision(hw: Hardware, probe: Callable[[], float]) -> tuple[str, str]:
    """``train.precision: auto``: (precision, why), e.g. ("bf16", "AMX, a layer step 1.8x fp32's speed") or
    ("fp32", "this CPU has no native bf16 — avx2"). ``probe`` (CPUs with native bf16 only) gives bf16's speed
    over fp32's on a training step; bf16 needs at least ``MIN_SPEEDUP``."""
    unit = native_bf16(hw)
    if unit and hw.device_type != "cpu":
        return "bf16", "this CUDA device computes bf16 natively"
    if unit:
        speedup = probe()
        verdict = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
        return verdict, f"{unit}, a layer step in bf16 ran {speedup:.2f}x fp32's speed"
    if hw.device_type == "cuda":
        return "fp32", "this CUDA device has no native bf16"
    if hw.device_type == "cpu":
        return "fp32", f"this CPU has no native bf16 — {hw.cpu_capability.lower() or 'unknown'}"
    return "fp32", f"native bf16 is detected on CPU and CUDA only, not {hw.device_type}"


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in /proc/cpuinfo's text (x86: ``flags : fpu vme ...``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _cpu_flags() -> frozenset[str]:
    """/proc/cpuinfo on Linux; elsewhere torch's own CPU probes (cpuinfo library) for the two flags that matter."""
    try:
        flags = parse_cpu_flags(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        flags = frozenset()
    if flags:
        return flags
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
    found = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    if "amx_tile" in found:
        found.add("amx_bf16")  # every CPU with AMX tiles (Sapphire Rapids onwards) has AMX-BF16
    return frozenset(found)


def detect_hardware(device: torch.device) -> Hardware:
    """The real facts for ``device``, gathered once when training starts."""
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return Hardware(device_type=device.type, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    cpu_flags=_cpu_flags(), cuda_bf16=cuda_bf16)


def bf16_matmul_slowdown(size: int = 256, reps: int = 5, budget_s: float = 0.1) -> float:
    """Seconds of a ``size``² bf16 matmul over an fp32 one on one core of this CPU (best of ``reps`` after a
    warm-up; each dtype stops early once it has spent ``budget_s``): ~0.4 with native bf16, tens to hundreds when
    emulated. One thread: on a shared machine, several threads' timings are the scheduler's, not the kernel's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _matmul_ratio(size, reps, budget_s)
    finally:
        torch.set_num_threads(threads)


def _matmul_ratio(size: int, reps: int, budget_s: float) -> float:
    best: dict[torch.dtype, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b  # warm-up: first-call dispatch and allocation
        spent, best[dtype] = 0.0, float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            took = time.perf_counter() - start
            best[dtype], spent = min(best[dtype], took), spent + took
            if spent > budget_s:
                break
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)


def bf16_step_speedup(dim: int = 256, reps: int = 3) -> float:
    """bf16 autocast's speed over fp32's on the forward + backward of one of our Transformer encoder layers
    (``nn.transformer.EncoderLayer``: attention through ``nn.attention.attend`` with a padding mask, feed-forward
    2 x ``dim``; batch 8 x 64 positions), best of ``reps`` after a warm-up, one thread (as
    ``bf16_matmul_slowdown``): > 1 when bf16 trains faster on this CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # the probe's draws leave training's random stream alone
            torch.manual_seed(0)
            return _step_speedup(dim, reps)
    finally:
        torch.set_num_threads(threads)


def _step_speedup(dim: int, reps: int) -> float:
    layer = EncoderLayer(dim, 4, 2 * dim, dropout=0.1)
    x = torch.randn(8, 64, dim)
    mask = torch.arange(64)[None, None, None, :] < torch.randint(32, 65, (8, 1, 1, 1))  # (B, 1, 1, S)
    best = {}
    for name, context in (("fp32", nullcontext()), ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
        times = []
        for _ in range(reps + 1):  # the first is the warm-up
            start = time.perf_counter()
            with context:
                out = layer(x, mask)
            out.float().sum().backward()
            times.append(time.perf_counter() - start)
        best[name] = min(times[1:])
    return best["fp32"] / max(best["bf16"], 1e-9)


def resolve_precision(requested: str, hw: Hardware, *, measure: Callable[[], float] = bf16_matmul_slowdown,
                      probe: Callable[[], float] = bf16_step_speedup) -> tuple[str, str]:
    """The precision to train in for ``train.precision: requested`` on ``hw``, and the line to log ("" when
    there is nothing to say): which one auto chose and why (``probe``: see ``choose_precision``), or a warning
    when bf16 is forced on a CPU that emulates it, with the slowdown ``measure`` found."""
    if requested not in CHOICES:
        raise ConfigError(f"train.precision: {requested!r} is not one of {', '.join(CHOICES)}")
    if requested == "auto":
        name, why = choose_precision(hw, probe)
        return name, f"precision: {name} (auto: {why})"
    if requested == "bf16" and hw.device_type == "cpu" and not native_bf16(hw):
        ratio = measure()
        speed = f"{ratio:.0f}x slower than" if ratio >= 1.5 else f"{ratio:.2f}x the time of"
        return "bf16", (f"warning: train.precision=bf16 on a CPU without native bf16 "
                        f"({hw.cpu_capability.lower() or 'unknown'}): a bf16 matmul measured {speed} fp32 here; "
                        f"use fp32 or auto")
    return requested, ""


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
                clip_grad_norm(params, clip_norm)
            optimizer.step()
            return True
        self.scaler.unscale_(optimizer)
        if clip_norm > 0:
            clip_grad_norm(params, clip_norm)
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
