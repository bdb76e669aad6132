"""Writing a self-contained model folder: weights (safetensors), config, tokenizer, card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from safetensors.torch import save_file

from transduce.config import RunConfig, from_dict, to_dict
from transduce.models import rnn
from transduce.models.transformer import tied_aliases
from transduce.train import checkpoint as ckpt
from transduce.train.corpus import Tokenizers
from transduce.train.plots import plot_curves

if TYPE_CHECKING:
    from transduce.train.trainer import Trainer


def save_weights(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype = torch.float32,
                 skip: set[str] | None = None) -> None:
    """Each tensor stored once: names in ``skip`` (aliases of tied weights) are left out and
    re-tied by the model on load."""
    skip = skip or set()
    tensors = {k: v.detach().cpu().to(dtype).contiguous().clone() for k, v in state.items() if k not in skip}
    save_file(tensors, str(path))


def model_files(cfg: RunConfig, run_dir: Path) -> list[Path]:
    """Tokenizer files a model folder needs besides weights and config."""
    if cfg.task == "ctc":
        return [run_dir / "spm.model"]
    return list(dict.fromkeys(Tokenizers.files(run_dir, cfg.data.joint_vocab)))


def weight_aliases(cfg: RunConfig) -> set[str]:
    """Parameter names stored once because they are tied to another."""
    if cfg.task == "rnn_translation":
        return rnn.tied_aliases(cfg.model)
    if cfg.task == "ctc":
        from transduce.models.ctc import tied_aliases as ctc_aliases

        return ctc_aliases(cfg.model)
    return tied_aliases(cfg.model) if cfg.task == "translation" else set()


def write_model_dir(out: Path, weights: dict[str, torch.Tensor], config: dict, run_dir: Path,
                    card: dict, dtype: torch.dtype = torch.float32) -> Path:
    """``out``: model.safetensors, config.yaml, the tokenizer files from ``run_dir``, card.json."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = from_dict(config)
    save_weights(weights, out / "model.safetensors", dtype, skip=weight_aliases(cfg))
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for path in model_files(cfg, run_dir):
        shutil.copy(path, out / path.name)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return out


def export_model(trainer: Trainer) -> Path:
    """RUN_DIR/model from the best checkpoint, or the average of the last N when asked."""
    t, run = trainer.cfg.train, trainer.run_dir
    if t.average_last > 0:
        paths = ckpt.step_checkpoints(trainer.ckpt_dir)[-t.average_last :]
        weights, source = ckpt.average(paths), f"average of {len(paths)} last checkpoints"
    else:
        bests = [p for p in (trainer.ckpt_dir / "best.pt", trainer.ckpt_dir / "best") if p.exists()]
        path = bests[0] if bests else ckpt.step_checkpoints(trainer.ckpt_dir)[-1]
        weights, source = ckpt.load(path)["model"], path.name
    s = trainer.state
    card = {"updates": s.update, "epochs": s.epoch, "train_seconds": round(s.train_seconds),
            "weights": source, "best_dev": s.best_score,
            "dev": [h for h in s.history if h.get("kind") == "valid"][-1:]}
    out = write_model_dir(run / "model", weights, to_dict(trainer.cfg), run, card)
    plot_curves(s.history, run / "curves.png")
    trainer.log(f"model written to {out} ({source}); curves in {run / 'curves.png'}")
    return out
