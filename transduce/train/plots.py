"""Training-curve plot from the metrics history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict[str, Any]], out: Path) -> None:
    """Train/dev loss on the left, the dev metric (BLEU, or WER for speech) on the right."""
    train = [h for h in history if h.get("kind") == "train"]
    valid = [h for h in history if h.get("kind") == "valid"]
    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot([h["update"] for h in train], [h["loss"] for h in train], label="train loss")
    if valid:
        ax_loss.plot([h["update"] for h in valid], [h["loss"] for h in valid], "o-", label="dev loss")
    for key in _numeric(valid, "loss_"):  # a multi-task model's dev loss per task
        rows = [h for h in valid if key in h]
        ax_loss.plot([h["update"] for h in rows], [h[key] for h in rows], "--", label=f"dev {key[5:]} loss")
    ax_loss.set_xlabel("update")
    ax_loss.set_ylabel("loss (bits/token)")
    ax_loss.legend()
    scores = _numeric(valid, "bleu_")
    if scores:  # several scores (per language or task): each a line, with WER beside them when there is one
        for key in [*scores, *(["wer"] if any("wer" in h for h in valid) else [])]:
            rows = [h for h in valid if key in h]
            ax_bleu.plot([h["update"] for h in rows], [h[key] for h in rows], "o-", label=key)
        ax_bleu.legend(fontsize="small")
        ax_bleu.set_ylabel("dev BLEU / WER (%)")
    else:
        metric = "wer" if any("wer" in h for h in valid) else "bleu"
        scored = [h for h in valid if metric in h]
        if scored:
            ax_bleu.plot([h["update"] for h in scored], [h[metric] for h in scored], "o-")
        ax_bleu.set_ylabel("dev WER (%)" if metric == "wer" else "dev BLEU")
    ax_bleu.set_xlabel("update")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _numeric(history: list[dict[str, Any]], prefix: str) -> list[str]:
    """The keys starting with ``prefix`` whose values are numbers, sorted."""
    return sorted({k for h in history for k, v in h.items()
                   if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)})
