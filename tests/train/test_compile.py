"""train.compile: compiled and eager training of a tiny Transformer give the same losses, evaluation runs the
layers eagerly, and a machine that cannot compile gets a one-line error naming the setting."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from transduce.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.errors import ConfigError
from transduce.models.transformer import TransformerConfig
from transduce.train import compile as compile_module
from transduce.train.trainer import Trainer

UPDATES = 6  # the warm-up line needs 1 + 5 updates

problem = compile_module.compile_problem(torch.device("cpu"))
needs_compiler = pytest.mark.skipif(problem is not None, reason=f"torch.compile unusable here: {problem}")


def config(data: Path, *, compiled: bool) -> RunConfig:
    """Dropout 0: compiled code draws dropout masks from its own generator, so only then do the runs agree."""
    return RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1, dropout=0.0,
                                pre_norm=False),
        optim=OptimConfig(lr=1e-3, warmup=4),
        train=TrainConfig(max_tokens=256, max_updates=UPDATES, eval_every=1000, eval_bleu=False, log_every=1,
                          seed=3, compile=compiled),
    )


def train(data: Path, out: Path, *, compiled: bool) -> tuple[Trainer, list[str]]:
    lines: list[str] = []
    trainer = Trainer(config(data, compiled=compiled), out, log=lines.append, show_progress=False)
    trainer.fit()
    return trainer, lines


@needs_compiler
def test_compiled_training_equals_eager(tmp_path: Path) -> None:
    data = write_toy(tmp_path / "data", train=200, valid=20, test=0)
    eager, _ = train(data, tmp_path / "eager", compiled=False)
    compiled, lines = train(data, tmp_path / "compiled", compiled=True)
    losses = [[e["loss"] for e in t.state.history if e["kind"] == "train"] for t in (eager, compiled)]
    assert len(losses[0]) == len(losses[1]) == UPDATES
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=1e-5)
    assert any("train.compile: 2 layers compiled" in line for line in lines)
    assert any(line.startswith("train.compile: warm-up") for line in lines)
    valid = [e["loss"] for t in (eager, compiled) for e in t.state.history if e["kind"] == "valid"]
    assert valid[1] == pytest.approx(valid[0], rel=1e-4)


@needs_compiler
def test_compiled_layers_run_eagerly_when_evaluating() -> None:
    layer = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(torch.nn.ModuleList([layer]))
    assert compile_module.compile_layers(model, torch.device("cpu")) == 1
    wrapper = layer.forward
    assert isinstance(wrapper, compile_module._TrainingForward)
    calls: list[str] = []
    wrapper.compiled = lambda *a, **k: calls.append("compiled") or wrapper.eager(*a, **k)
    x = torch.randn(2, 4)
    layer.eval()
    layer(x)
    layer.train()
    with torch.no_grad():
        layer(x)
    assert calls == []
    layer(x)
    assert calls == ["compiled"]
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_no_compiler_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_module.shutil, "which", lambda _: None)
    data = write_toy(tmp_path / "data", train=50, valid=5, test=0)
    cfg = config(data, compiled=True)
    with pytest.raises(ConfigError, match=r"^train.compile: .*no C\+\+ compiler.*train.compile=false$"):
        Trainer(replace(cfg, train=replace(cfg.train, max_updates=1)), tmp_path / "run", show_progress=False)
