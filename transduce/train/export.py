"""Exporting a run: RUN_DIR/model, a self-contained model folder (``transduce/models/folder.py``) with the
best checkpoint's weights, or the average of the last N."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from transduce.config import to_dict
from transduce.models.folder import write_model_folder
from transduce.train import checkpoint as ckpt
from transduce.train.plots import plot_curves

if TYPE_CHECKING:
    from transduce.train.trainer import Trainer


def export_model(trainer: Trainer) -> Path:
    """RUN_DIR/model from the best checkpoint, or the average of the last N when asked; the task kind names
    the files (tokenizers, ...) and tied weights of the folder."""
    t, run, cfg = trainer.cfg.train, trainer.run_dir, trainer.cfg
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
    out = write_model_folder(run / "model", weights, to_dict(cfg), trainer.kind.folder_files(cfg, run), card,
                             aliases=trainer.kind.tied_aliases(cfg))
    plot_curves(s.history, run / "curves.png")
    trainer.log(f"model written to {out} ({source}); curves in {run / 'curves.png'}")
    return out
