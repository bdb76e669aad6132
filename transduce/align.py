"""Attention alignments of a translation model: teacher-forced cross-attention weights of source/target
pairs with their log-probabilities, as heatmap PNGs and text (``translate --plot-attention``, ``align``).

Dimension letters: B pairs, S source pieces + EOS, T target pieces + EOS, D features, V vocabulary.
Row t of an alignment is the attention the model used to predict target piece t (the last row: EOS).
Teacher forcing the decoded output gives exactly the weights the search used, without touching it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transduce.data.batching import collate
from transduce.data.tokenizer import PAD
from transduce.models.rnn import RNNSeq2Seq
from transduce.translate import Translator

EOS_PIECE = "</s>"


@dataclass
class Alignment:
    """One source/target pair under teacher forcing."""

    src_pieces: list[str]
    """S source subword pieces, the EOS the encoder sees last."""
    tgt_pieces: list[str]
    """T target subword pieces, EOS last."""
    weights: Tensor
    """(T, S) fp32 cross-attention weights; each row sums to 1."""
    log_prob: float
    """log p(target pieces and EOS | source), natural log."""

    def links(self) -> list[int]:
        """For each target piece the most attended source position (T,)."""
        return self.weights.argmax(dim=1).tolist()


def attention_label(model: Any, layer: int | None, head: int | None) -> str:
    """Which attention a plot shows, for its title: "layer 2/3, head 1/4" counts from 1 (the
    command-line options count from 0)."""
    if isinstance(model, RNNSeq2Seq):
        return "attention"
    layers = len(model.decoder.layers)
    index = (layers - 1 if layer is None else layer % layers) + 1
    heads = model.decoder.layers[0].cross_attn.heads
    return f"layer {index}/{layers}, " + (f"head {head + 1}/{heads}" if head is not None else f"mean of {heads} heads")


def check_attention_choice(model: Any, layer: int | None, head: int | None) -> None:
    """ValueError unless ``layer``/``head`` (None = last layer, mean over heads) fit the model."""
    if isinstance(model, RNNSeq2Seq):
        if layer is not None or head is not None:
            raise ValueError("an RNN model has a single attention (heads averaged): "
                             "attention layer and head apply to Transformers only")
        return
    layers = len(model.decoder.layers)
    if layer is not None and not -layers <= layer < layers:
        raise ValueError(f"attention layer {layer} out of range: the decoder has {layers} layers")
    heads = model.decoder.layers[-1 if layer is None else layer].cross_attn.heads
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"attention head {head} out of range: the decoder layers have {heads} heads")


@torch.no_grad()
def force_align(model: Any, src_ids: list[list[int]], tgt_ids: list[list[int]], *, layer: int | None = None,
                head: int | None = None, batch_size: int = 64, device: str | torch.device = "cpu"
                ) -> list[tuple[Tensor, float]]:
    """Teacher-force each target (ids without specials) -> ((T, S) weights on the CPU, log-prob)."""
    check_attention_choice(model, layer, head)
    choice = {} if layer is None and head is None else {"layer": -1 if layer is None else layer, "head": head}
    out: list[tuple[Tensor, float]] = []
    for start in range(0, len(src_ids), batch_size):
        batch = collate(range(start, min(start + batch_size, len(src_ids))), src_ids, tgt_ids).to(device)
        hidden, weights = model.features_with_attention(batch.src, batch.src_lens, batch.tgt_in,
                                                        **choice)  # (B, T, D), (B, T, S)
        log_probs = (hidden.float() @ model.output_weight.float().t()).log_softmax(-1)  # (B, T, V)
        token_lp = log_probs.gather(2, batch.tgt_out[:, :, None])[:, :, 0]  # (B, T)
        token_lp = token_lp.masked_fill(batch.tgt_out == PAD, 0.0)
        for b, (s, t) in enumerate(zip(batch.src_lens.tolist(), batch.tgt_lens.tolist(), strict=True)):
            out.append((weights[b, :t, :s].float().cpu(), float(token_lp[b].sum())))
    return out


def align_ids(translator: Translator, sources: list[str], tgt_ids: list[list[int]], *, layer: int | None = None,
              head: int | None = None, batch_size: int | None = None) -> list[Alignment]:
    """Alignments of source sentences with target token ids (e.g. the decoded hypotheses);
    ``batch_size`` defaults to the model's decode batch size."""
    toks = translator.tokenizers
    src_ids = toks.src.encode([s.strip() for s in sources])
    pairs = force_align(translator.model, src_ids, tgt_ids, layer=layer, head=head,
                        batch_size=batch_size or translator.config.decode.batch_size, device=translator.device)
    return [Alignment(toks.src.id_to_piece(s) + [EOS_PIECE], toks.tgt.id_to_piece(t) + [EOS_PIECE], w, lp)
            for s, t, (w, lp) in zip(src_ids, tgt_ids, pairs, strict=True)]


def align_texts(translator: Translator, sources: list[str], targets: list[str], *, layer: int | None = None,
                head: int | None = None, batch_size: int | None = None) -> list[Alignment]:
    """Forced alignment of given source/target sentence pairs."""
    tgt_ids = translator.tokenizers.tgt.encode([t.strip() for t in targets])
    return align_ids(translator, sources, tgt_ids, layer=layer, head=head, batch_size=batch_size)


def alignment_text(alignment: Alignment, title: str) -> str:
    """A header with the log-probability, then per target piece: target index and piece, the most
    attended source index and piece, and that weight (tab-separated)."""
    lines = [f"# {title}\tlog_prob {alignment.log_prob:.4f}",
             "# source: " + " ".join(alignment.src_pieces), "# target: " + " ".join(alignment.tgt_pieces)]
    for t, s in enumerate(alignment.links()):
        lines.append(f"{t}\t{alignment.tgt_pieces[t]}\t{s}\t{alignment.src_pieces[s]}\t"
                     f"{float(alignment.weights[t, s]):.3f}")
    return "\n".join(lines) + "\n"


def pharaoh(alignment: Alignment) -> str:
    """``source-target`` index pairs (0-based pieces, EOS included), one per target piece."""
    return " ".join(f"{s}-{t}" for t, s in enumerate(alignment.links()))


def plot_alignment(alignment: Alignment, path: Path, title: str) -> None:
    """Heatmap PNG: source pieces on the x axis, target pieces on the y axis, weights in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, s = alignment.weights.shape
    width, height = min(2.5 + 0.32 * s, 40.0), min(2.0 + 0.3 * t, 40.0)  # inches: ~0.3 in per piece
    fig, ax = plt.subplots(figsize=(max(width, 4.5), max(height, 3.5)))
    image = ax.imshow(alignment.weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(s), alignment.src_pieces, rotation=90, fontsize=9)
    ax.set_yticks(range(t), alignment.tgt_pieces, fontsize=9)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    ax.set_title(f"{title}  (log p = {alignment.log_prob:.2f})", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_alignments(alignments: list[Alignment], out: Path, *, png: bool = True, txt: bool = False,
                     label: str = "sentence", attention: str = "attention") -> list[Path]:
    """``out/NNNN.png`` and/or ``out/NNNN.txt`` per alignment, numbered from 1 like input lines;
    ``attention`` (``attention_label``) says in the plot titles which weights are shown."""
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(alignments))))
    written = []
    for i, alignment in enumerate(alignments, start=1):
        title = f"{label} {i}"
        if png:
            written.append(out / f"{i:0{width}d}.png")
            plot_alignment(alignment, written[-1], f"{title}, {attention}")
        if txt:
            written.append(out / f"{i:0{width}d}.txt")
            written[-1].write_text(alignment_text(alignment, title))
    return written
