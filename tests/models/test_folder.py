"""The model-folder layer: tied weights stored once and re-tied, the stored dtype, the task's extra files, card
and README, run folders, and errors that name the folder, the file and the tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from transduce.errors import ConfigError
from transduce.models.folder import ModelFolder, resolve, write_model_folder
from transduce.models.transformer import TransformerConfig, build, tied_aliases

CFG = TransformerConfig(dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1, dropout=0.0)
CONFIG = {"task": "translation", "model": {"dim": 16}}


def tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(CFG, 12, 12).eval()


def write(out: Path, model: torch.nn.Module, dtype: torch.dtype = torch.float32, **extra: object) -> Path:
    return write_model_folder(out, model.state_dict(), CONFIG, [], {"updates": 3}, dtype=dtype,
                              aliases=tied_aliases(CFG), **extra)  # type: ignore[arg-type]


def outputs(model: torch.nn.Module) -> torch.Tensor:
    src, tgt = torch.tensor([[4, 5, 6, 3]]), torch.tensor([[2, 7, 8]])
    with torch.no_grad():
        return model.features(src, torch.tensor([4]), tgt)


def test_tied_weights_are_stored_once_and_retied(tmp_path: Path) -> None:
    model = tiny(1)
    aliases = tied_aliases(CFG)
    assert aliases and aliases < set(model.state_dict())
    folder = ModelFolder.read(write(tmp_path / "m", model))
    assert set(load_file(str(folder.path / "model.safetensors"))) == set(model.state_dict()) - aliases
    loaded = folder.load_into(tiny(2), aliases)
    assert torch.equal(outputs(loaded), outputs(model))
    assert loaded.decoder.output.weight is loaded.decoder.embed.embedding.weight  # still one tensor


def test_float16_folders_load_as_float32(tmp_path: Path) -> None:
    model = tiny(1)
    folder = ModelFolder.read(write(tmp_path / "m", model, dtype=torch.float16))
    assert {t.dtype for t in load_file(str(folder.path / "model.safetensors")).values()} == {torch.float16}
    state = folder.state_dict()
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, model.state_dict()[name].half().float())


def test_files_card_readme_and_run_folders(tmp_path: Path) -> None:
    tokenizer = tmp_path / "spm.model"
    tokenizer.write_bytes(b"pieces")
    out = write_model_folder(tmp_path / "run" / "model", tiny(1).state_dict(), CONFIG, [tokenizer, tokenizer],
                             {"updates": 3}, aliases=tied_aliases(CFG), readme="# tiny\n")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "card.json", "config.yaml", "model.safetensors",
                                                     "spm.model"]
    folder = ModelFolder.read(tmp_path / "run")  # a run folder: its model/
    assert folder.path == out and resolve(tmp_path / "run") == out
    assert folder.config == CONFIG and folder.card == {"updates": 3} and folder.readme == "# tiny\n"
    assert folder.file("spm.model").read_bytes() == b"pieces"
    with pytest.raises(FileNotFoundError, match=r"model/spm.src.model: no such file in the model folder"):
        folder.file("spm.src.model")


def test_errors_name_the_folder_file_and_tensors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: no model.safetensors here or in {tmp_path}/model"):
        ModelFolder.read(tmp_path)
    out = write(tmp_path / "m", tiny(1))
    state = load_file(str(out / "model.safetensors"))
    name = sorted(state)[0]
    save_file({**{k: v for k, v in state.items() if k != name}, "extra.weight": torch.zeros(2)},
              str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"{out}: weights do not match config \(missing \['{name}'\], "
                                         r"unexpected \['extra.weight'\]\)"):
        ModelFolder.read(out).load_into(tiny(2), tied_aliases(CFG))
    (out / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{out}/config.yaml: invalid config"):
        ModelFolder.read(out)
    (out / "model.safetensors").write_bytes(b"not safetensors")
    (out / "config.yaml").write_text("task: translation\n")
    with pytest.raises(ConfigError, match=rf"{out}/model.safetensors: unreadable weights"):
        ModelFolder.read(out).state_dict()
