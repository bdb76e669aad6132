"""Fine-tuning with ``train.init_from``: the new run starts from the source model's exported weights and
tokenizer, with a fresh optimizer; a model that does not fit, or a run folder with another tokenizer, is a
clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transduce.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.models.transformer import TransformerConfig
from transduce.train.trainer import Trainer


def config(data: Path, *, dim: int = 32, init_from: str = "", dropout: float = 0.1) -> RunConfig:
    return RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=dim, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1, dropout=dropout),
        optim=OptimConfig(lr=1e-3, warmup=5),
        train=TrainConfig(max_tokens=256, max_updates=4, eval_every=4, eval_bleu=False, init_from=init_from),
    )


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("finetune")
    write_toy(base / "data", task="copy", train=200, valid=20, seed=3)
    Trainer(config(base / "data"), base / "source", log=quiet, show_progress=False).fit()
    return base


def test_fine_tuning_starts_from_the_source_weights_and_tokenizer(source: Path, tmp_path: Path) -> None:
    cfg = config(source / "data", init_from=str(source / "source"), dropout=0.3)  # dropout may change
    messages: list[str] = []
    trainer = Trainer(cfg, tmp_path / "tuned", log=messages.append, show_progress=False)
    exported = load_file(str(source / "source" / "model" / "model.safetensors"))
    own = trainer.model.state_dict()
    assert exported and all(torch.equal(own[k], v) for k, v in exported.items())
    assert (tmp_path / "tuned" / "spm.model").read_bytes() == (source / "source" / "spm.model").read_bytes()
    assert any(m.startswith(f"initialized {len(exported)} tensors") for m in messages)
    assert trainer.state.update == 0 and not trainer.optimizer.state  # fresh optimizer and schedule
    trainer.fit()
    tuned = load_file(str(tmp_path / "tuned" / "model" / "model.safetensors"))
    assert any(not torch.equal(tuned[k], v) for k, v in exported.items())  # and it trained


def test_a_model_that_does_not_fit_is_named(source: Path, tmp_path: Path) -> None:
    wider = config(source / "data", dim=48, init_from=str(source / "source"))
    with pytest.raises(ConfigError, match=r"does not fit this model \(shape: .*\(32,\) vs \(48,\)"):
        Trainer(wider, tmp_path / "wider", log=quiet, show_progress=False)
    with pytest.raises(ConfigError, match="train.init_from: .*no model.safetensors"):
        Trainer(config(source / "data", init_from=str(tmp_path)), tmp_path / "none", log=quiet, show_progress=False)


def test_a_run_folder_with_another_tokenizer_is_refused(source: Path, tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "spm.model").write_bytes(b"another tokenizer")
    cfg = config(source / "data", init_from=str(source / "source"))
    with pytest.raises(ConfigError, match="differs from"):
        Trainer(cfg, tmp_path / "used", log=quiet, show_progress=False)
