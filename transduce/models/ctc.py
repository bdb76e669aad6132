"""CTC speech recognizer: feature normalizer -> Conformer or Transformer encoder -> linear head.

Dimension letters: B batch, T feature frames, F feature bins, T' encoder frames, D model size,
V vocabulary (blank = 0 = the tokenizer's PAD id), U target length.
Contract: ``encode(feats, feat_lens) -> (out, out_lens)``; ``forward`` returns log-probs; the loss is
``ctc_loss`` below (summed over the batch: the trainer picks the normalizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import torch.nn.functional as F
from torch import Tensor, nn

from transduce.nn.conformer import ConformerEncoder, TransformerSpeechEncoder
from transduce.nn.masks import padding_mask
from transduce.nn.subsampling import LAYOUTS, conv_lengths

BLANK = 0


@dataclass(kw_only=True)
class CTCModelConfig:
    """Sizes and regularization of a CTC encoder."""

    encoder: str = "conformer"
    """Encoder kind: conformer or transformer."""
    input_dim: int = 80
    """Feature bins F per input frame (e.g. 80 log-mel)."""
    dim: int = 144
    """Model size D."""
    heads: int = 4
    """Attention heads; must divide dim."""
    layers: int = 6
    """Number of encoder blocks."""
    ffn_dim: int = 576
    """Hidden size of the feed-forward blocks."""
    kernel_size: int = 15
    """Depthwise convolution kernel (odd; conformer only)."""
    subsampling: int = 4
    """Frame-rate reduction of the convolutional front end: 4, 6 or 8."""
    subsampling_channels: int = 0
    """Channels of the front-end convolutions (0 = dim); fewer makes the front end much cheaper."""
    dropout: float = 0.1
    """Dropout on the input and residual branches."""
    attention_dropout: float = 0.0
    """Dropout on attention weights."""
    causal_conv: bool = False
    """Left-only depthwise convolution (needed for streaming; conformer only)."""
    utterance_norm: bool = False
    """Subtract each utterance's mean feature vector (over its real frames) before the global CMVN:
    removes the microphone/gain differences between recordings. Needs the whole utterance."""


def utterance_mean_norm(feats: Tensor, feat_lens: Tensor) -> Tensor:
    """feats (B, T, F) minus each utterance's mean over its real frames; padding stays 0."""
    real = padding_mask(feat_lens, feats.size(1))[..., None]  # (B, T, 1)
    mean = (feats * real).sum(1, keepdim=True) / feat_lens[:, None, None].clamp(min=1)  # (B, 1, F)
    return (feats - mean) * real


class CTCModel(nn.Module):
    """[utterance mean norm] -> normalizer (e.g. ``GlobalCMVN``) -> encoder -> linear head over V tokens."""

    def __init__(
        self, encoder: ConformerEncoder | TransformerSpeechEncoder, head: nn.Linear,
        normalizer: nn.Module | None = None, *, utterance_norm: bool = False,
    ) -> None:
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.encoder = encoder
        self.head = head
        self.utterance_norm = utterance_norm

    def encode(self, feats: Tensor, feat_lens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) [, attention mask (T', T')] -> out (B, T', D), out_lens (B,)."""
        if self.utterance_norm:
            feats = utterance_mean_norm(feats, feat_lens)
        return self.encoder.encode(self.normalizer(feats), feat_lens, mask)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) -> fp32 log-probs (B, T', V), out_lens (B,)."""
        out, out_lens = self.encode(feats, feat_lens)
        return self.head(out).float().log_softmax(dim=-1), out_lens


def ctc_loss(log_probs: Tensor, out_lens: Tensor, targets: Tensor, target_lens: Tensor) -> Tensor:
    """log_probs (B, T', V), out_lens (B,), padded targets (B, U), target_lens (B,) -> summed CTC loss
    (blank 0; impossible alignments give 0 instead of inf)."""
    return F.ctc_loss(
        log_probs.transpose(0, 1), targets, out_lens, target_lens,  # (T', B, V)
        blank=BLANK, reduction="sum", zero_infinity=True,
    )


def _check(cfg: CTCModelConfig, vocab_size: int) -> None:
    def fail(key: str, why: str) -> NoReturn:
        raise ValueError(f"model.{key}: {why}")

    if cfg.encoder not in ("conformer", "transformer"):
        fail("encoder", f"expected conformer or transformer, got {cfg.encoder!r}")
    if cfg.subsampling not in LAYOUTS:
        fail("subsampling", f"expected one of {sorted(LAYOUTS)}, got {cfg.subsampling}")
    if cfg.dim <= 0 or cfg.heads <= 0 or cfg.dim % cfg.heads:
        fail("heads", f"must divide dim {cfg.dim}, got {cfg.heads}")
    if cfg.layers < 1 or cfg.ffn_dim < 1:
        fail("layers" if cfg.layers < 1 else "ffn_dim", "must be positive")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        fail("kernel_size", f"must be a positive odd number, got {cfg.kernel_size}")
    if not 0.0 <= cfg.dropout < 1.0 or not 0.0 <= cfg.attention_dropout < 1.0:
        fail("dropout", f"dropout and attention_dropout must be in [0, 1), got {cfg.dropout}, {cfg.attention_dropout}")
    if cfg.encoder == "transformer" and cfg.causal_conv:
        fail("causal_conv", "only applies to the conformer encoder")
    freq = conv_lengths(cfg.input_dim, LAYOUTS[cfg.subsampling])
    if not isinstance(freq, int) or freq < 1:
        fail("input_dim", f"{cfg.input_dim} feature bins are too few for subsampling by {cfg.subsampling}")
    if vocab_size < 2:
        fail("vocab_size", f"need blank plus at least one token, got {vocab_size}")


def build_ctc(cfg: CTCModelConfig, vocab_size: int, normalizer: nn.Module | None = None) -> CTCModel:
    """Config + vocabulary size (including blank = 0) -> CTC model; raises ValueError on bad values."""
    _check(cfg, vocab_size)
    encoder: ConformerEncoder | TransformerSpeechEncoder
    if cfg.encoder == "conformer":
        encoder = ConformerEncoder(
            cfg.input_dim, cfg.dim, heads=cfg.heads, layers=cfg.layers, ffn_dim=cfg.ffn_dim,
            kernel_size=cfg.kernel_size, subsampling=cfg.subsampling, dropout=cfg.dropout,
            subsampling_channels=cfg.subsampling_channels,
            attention_dropout=cfg.attention_dropout, causal=cfg.causal_conv,
        )
    else:
        encoder = TransformerSpeechEncoder(
            cfg.input_dim, cfg.dim, heads=cfg.heads, layers=cfg.layers, ffn_dim=cfg.ffn_dim,
            subsampling=cfg.subsampling, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            subsampling_channels=cfg.subsampling_channels,
        )
    return CTCModel(encoder, nn.Linear(cfg.dim, vocab_size), normalizer, utterance_norm=cfg.utterance_norm)
