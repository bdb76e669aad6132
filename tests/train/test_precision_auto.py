"""``train.precision: auto`` picks bf16 only where the device computes it natively, from facts injected here so
nothing depends on this machine's CPU; forcing bf16 on a CPU that emulates it warns with a measured slowdown."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import torch
import yaml
from testkit import ROOT

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.models.transformer import TransformerConfig
from transduce.train import trainer as trainer_module
from transduce.train.precision import (
    Hardware,
    bf16_matmul_slowdown,
    bf16_step_speedup,
    choose_precision,
    detect_hardware,
    native_bf16,
    parse_cpu_flags,
    resolve_precision,
)
from transduce.train.trainer import Trainer

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}  # Skylake-SP: AVX-512 but no bf16 instructions
EPYC_AVX2 = Hardware(device_type="cpu", cpu_capability="AVX2", cpu_flags=AVX2)
SAPPHIRE_RAPIDS = Hardware(device_type="cpu", cpu_capability="AVX512",
                           cpu_flags=AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        (SAPPHIRE_RAPIDS, ("bf16", "AMX, a layer step in bf16 ran 1.80x fp32's speed")),
        (Hardware(device_type="cpu", cpu_capability="AVX512", cpu_flags=AVX512 | {"avx512_bf16"}),
         ("bf16", "AVX512-BF16, a layer step in bf16 ran 1.80x fp32's speed")),
        (EPYC_AVX2, ("fp32", "this CPU has no native bf16 — avx2")),
        (Hardware(device_type="cpu", cpu_capability="AVX512", cpu_flags=AVX512),
         ("fp32", "this CPU has no native bf16 — avx512")),
        (Hardware(device_type="cpu", cpu_capability="AVX512", cpu_flags=AVX512 | {"amx_tile"}),  # no AMX-BF16
         ("fp32", "this CPU has no native bf16 — avx512")),
        (Hardware(device_type="cuda", cpu_capability="AVX2", cpu_flags=AVX2, cuda_bf16=True),
         ("bf16", "this CUDA device computes bf16 natively")),
        (Hardware(device_type="cuda", cpu_flags=SAPPHIRE_RAPIDS.cpu_flags, cuda_bf16=False),  # a V100 on an AMX host
         ("fp32", "this CUDA device has no native bf16")),
        (Hardware(device_type="mps", cpu_flags=SAPPHIRE_RAPIDS.cpu_flags),
         ("fp32", "native bf16 is detected on CPU and CUDA only, not mps")),
    ],
)
def test_auto_chooses_bf16_only_where_it_is_native(hw: Hardware, expected: tuple[str, str]) -> None:
    probe = _fast if native_bf16(hw) and hw.device_type == "cpu" else _never  # probed on CPUs with native bf16
    assert choose_precision(hw, probe) == expected
    name, why = expected
    assert resolve_precision("auto", hw, measure=_never, probe=probe) == (name, f"precision: {name} (auto: {why})")


def _fast() -> float:
    return 1.8


def test_auto_keeps_fp32_on_a_native_bf16_cpu_where_the_probe_step_is_slower() -> None:
    """An AVX512-BF16 EPYC before ``nn.attention.attend``: bf16 matmuls 2.2x fp32, attention 6-20x slower."""
    epyc = Hardware(device_type="cpu", cpu_capability="AVX512", cpu_flags=AVX512 | {"avx512_bf16"})
    assert choose_precision(epyc, lambda: 0.24) == ("fp32", "AVX512-BF16, a layer step in bf16 ran 0.24x fp32's speed")
    assert choose_precision(epyc, lambda: 1.05)[0] == "fp32"  # within MIN_SPEEDUP: not worth it


def test_the_probe_is_quick_and_leaves_threads_and_random_draws_alone() -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    start = time.perf_counter()
    speedup = bf16_step_speedup(dim=128)
    assert time.perf_counter() - start < 5.0
    assert 0 < speedup < float("inf") and torch.get_num_threads() == threads
    assert torch.equal(torch.rand(4), expected)


def test_cpu_flags_come_from_the_flags_line() -> None:
    cpuinfo = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16 amx_tile\n"
               "bugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert parse_cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert parse_cpu_flags("Features\t: fp asimd sve bf16\n") == frozenset()  # aarch64: not a flags line


def test_real_facts_are_consistent() -> None:
    hw = detect_hardware(torch.device("cpu"))
    assert hw.device_type == "cpu" and hw.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert not hw.cuda_bf16
    if not {"amx_bf16", "avx512_bf16"} & hw.cpu_flags:
        assert choose_precision(hw, _never)[0] == "fp32"


def _never() -> float:
    raise AssertionError("the bf16 slowdown is only measured when bf16 is forced on a CPU that emulates it")


def test_explicit_precisions_pass_through_and_unknown_ones_name_the_key() -> None:
    for name in ("fp32", "fp16"):
        assert resolve_precision(name, EPYC_AVX2, measure=_never) == (name, "")
    assert resolve_precision("bf16", SAPPHIRE_RAPIDS, measure=_never) == ("bf16", "")
    cuda_without_bf16 = Hardware(device_type="cuda", cpu_flags=AVX2)
    assert resolve_precision("bf16", cuda_without_bf16, measure=_never) == ("bf16", "")  # CPU benchmark says nothing
    with pytest.raises(ConfigError, match="train.precision: 'fp8' is not one of fp32, bf16, fp16, auto"):
        resolve_precision("fp8", EPYC_AVX2)


def test_forced_bf16_on_an_emulating_cpu_warns_with_the_measured_slowdown() -> None:
    name, note = resolve_precision("bf16", EPYC_AVX2, measure=lambda: 587.4)
    assert name == "bf16"
    assert note == ("warning: train.precision=bf16 on a CPU without native bf16 (avx2): a bf16 matmul measured "
                    "587x slower than fp32 here; use fp32 or auto")


def test_the_slowdown_benchmark_is_quick_and_leaves_threads_alone() -> None:
    threads = torch.get_num_threads()
    start = time.perf_counter()
    ratio = bf16_matmul_slowdown()
    assert time.perf_counter() - start < 0.5
    assert 0 < ratio < float("inf") and torch.get_num_threads() == threads


def _tiny(tmp_path: Path, precision: str, updates: int = 2) -> RunConfig:
    data = write_toy(tmp_path / "data", task="copy", train=100, valid=5, test=0)
    return RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1, dropout=0.0),
        optim=OptimConfig(lr=1e-2, warmup=10),
        train=TrainConfig(max_tokens=256, max_updates=updates, eval_every=updates, precision=precision, threads=1,
                          eval_bleu=False),
    )


@pytest.mark.parametrize(("hw", "chosen", "line"), [
    (EPYC_AVX2, "fp32", "precision: fp32 (auto: this CPU has no native bf16 — avx2)"),
    (SAPPHIRE_RAPIDS, "bf16", "precision: bf16 (auto: AMX, a layer step in bf16 ran 1.80x fp32's speed)"),
])
def test_auto_run_trains_in_the_chosen_precision_and_records_it(
        hw: Hardware, chosen: str, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_module, "detect_hardware", lambda device: hw)
    monkeypatch.setattr(trainer_module, "resolve_precision", functools.partial(resolve_precision, probe=_fast))
    cfg = _tiny(tmp_path, "auto")
    logs: list[str] = []
    trainer = Trainer(cfg, tmp_path / "run", log=logs.append, show_progress=False)
    assert [entry for entry in logs if entry.startswith("precision")] == [line]
    assert cfg.train.precision == "auto"  # the caller's config is left as it was
    assert trainer.cfg.train.precision == chosen and trainer.precision.name == chosen
    with torch.no_grad(), trainer.autocast:
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert out.dtype == (torch.bfloat16 if chosen == "bf16" else torch.float32)
    trainer.fit()
    assert trainer.state.update == 2
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step_2.pt", weights_only=True)
    assert saved["config"]["train"]["precision"] == chosen
    folder = yaml.safe_load((tmp_path / "run" / "model" / "config.yaml").read_text())
    assert folder["train"]["precision"] == chosen


def test_forced_bf16_warns_in_the_trainer_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_module, "detect_hardware", lambda device: EPYC_AVX2)
    logs: list[str] = []
    trainer = Trainer(_tiny(tmp_path, "bf16"), tmp_path / "run", log=logs.append, show_progress=False)
    assert trainer.precision.name == "bf16"
    warning = [line for line in logs if line.startswith("warning: train.precision=bf16")]
    assert len(warning) == 1, logs
    assert "on a CPU without native bf16 (avx2): a bf16 matmul measured " in warning[0]
    assert warning[0].endswith(" fp32 here; use fp32 or auto")


def test_auto_through_the_cli_trains_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``--set train.precision=auto`` loads, trains, and a resumed auto run continues (even where the machine,
    and so the choice, changed: the precision is not part of what a checkpoint must match)."""
    assert load_recipe(ROOT / "recipes" / "tiny-copy.yaml", ["train.precision=auto"]).train.precision == "auto"
    data = write_toy(tmp_path / "data", task="reverse", train=100, valid=5, test=0)
    args = ["train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
            "--set", f"data.dir={data}", "--set", "train.precision=auto", "--set", "train.eval_every=2",
            "--set", "train.threads=1", "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1"]
    monkeypatch.setattr(trainer_module, "detect_hardware", lambda device: EPYC_AVX2)
    assert main([*args, "--set", "train.max_updates=2"]) == 0
    assert "precision: fp32 (auto: this CPU has no native bf16 — avx2)" in capsys.readouterr().out
    monkeypatch.setattr(trainer_module, "detect_hardware", lambda device: SAPPHIRE_RAPIDS)
    monkeypatch.setattr(trainer_module, "resolve_precision", functools.partial(resolve_precision, probe=_fast))
    assert main([*args, "--set", "train.max_updates=3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "precision: bf16 (auto: AMX, a layer step in bf16 ran 1.80x fp32's speed)" in out and "at update 2" in out
    folder = yaml.safe_load((tmp_path / "run" / "model" / "config.yaml").read_text())
    assert folder["train"]["precision"] == "bf16" and folder["train"]["max_updates"] == 3
