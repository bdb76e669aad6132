"""Modality front ends and adapters of the unified model (``models/unified.py``): each input modality is a
front end (speech: global CMVN + convolutional subsampling; text: embeddings; image: the pixel-column convolutions
of ``nn/image_frontend.py``) followed by a ``ModalityAdapter``
(projection into the shared width, optional bottleneck adapter layers, its own ``ZScore`` normalization), so that
every modality reaches the shared encoder layers at one width, dtype and scale.

Dimension letters: B batch, T feature frames, F mel bins, T' frames after subsampling, S text tokens, W image
columns (pixels), P image rows (the fixed height), W' columns after the front end, C a front end's width, D the
shared width, H the bottleneck width.

Adding a modality (e.g. images): a front-end module with ``forward(x, x_lens) -> (B, N, C), (B,)``, a builder
function ``(cfg, vocab) -> Modality`` and one entry in ``MODALITIES``; the recipe then names it in
``model.inputs``. The shared layers, the decoder and the tags do not change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from transduce.data.cmvn import GlobalCMVN
from transduce.data.tokenizer import PAD
from transduce.models.ctc import utterance_mean_norm
from transduce.nn.image_frontend import ImageFrontend
from transduce.nn.masks import padding_mask
from transduce.nn.subsampling import Conv2dSubsampling
from transduce.nn.zscore import ZScore

if TYPE_CHECKING:
    from transduce.models.unified import UnifiedModelConfig


class SpeechFrontEnd(nn.Module):
    """Raw log-mel features (B, T, F) -> [utterance mean subtracted] -> global CMVN -> convolutional subsampling
    -> (B, T', C)."""

    def __init__(self, subsampling: Conv2dSubsampling, normalizer: nn.Module, *, utterance_norm: bool = False
                 ) -> None:
        super().__init__()
        self.normalizer, self.subsampling, self.utterance_norm = normalizer, subsampling, utterance_norm

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        short = self.subsampling.min_frames - feats.size(1)
        if short > 0:  # too short for one output frame: padded to one, which every length (0) masks
            feats = F.pad(feats, (0, 0, 0, short))  # (B, min_frames, F)
        if self.utterance_norm:
            feats = utterance_mean_norm(feats, feat_lens)
        x = self.subsampling(self.normalizer(feats))  # (B, T', C)
        return x, self.subsampling.output_lengths(feat_lens)


class TextFrontEnd(nn.Module):
    """Token ids (B, S) -> embeddings x sqrt(C) (B, S, C); positions come from the shared layers."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = embedding
        self.scale = math.sqrt(embedding.embedding_dim)

    def forward(self, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.embedding(tokens) * self.scale, token_lens


class ImageFrontEnd(nn.Module):
    """Pixel columns (B, W, P) in [0, 1], right-padded -> ``ImageFrontend`` (pixel statistics stored with the model,
    convolutions) -> (B, W', C), zero past each length; images narrower than its receptive field are padded to it
    (their length is 0, masked everywhere)."""

    def __init__(self, frontend: ImageFrontend) -> None:
        super().__init__()
        self.frontend = frontend

    def forward(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        short = self.frontend.receptive_field - images.size(1)
        if short > 0:
            images = F.pad(images, (0, 0, 0, short))  # (B, receptive field, P)
        return self.frontend.encode(images, widths)


class BottleneckLayer(nn.Module):
    """x + up(relu(down(LayerNorm(x)))) (Houlsby-style adapter layer), (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, bottleneck: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down, self.up = nn.Linear(dim, bottleneck), nn.Linear(bottleneck, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.up(self.down(self.norm(x)).relu()))


class ModalityAdapter(nn.Module):
    """(B, N, C) front-end output -> Linear to D -> bottleneck layers -> ZScore -> (B, N, D), padding zeroed."""

    def __init__(self, proj: nn.Linear, layers: list[BottleneckLayer], norm: ZScore) -> None:
        super().__init__()
        self.proj, self.layers, self.norm = proj, nn.ModuleList(layers), norm

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        real = padding_mask(lens, x.size(1))  # (B, N)
        x = self.proj(x)  # (B, N, D)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x, real)


class Modality(nn.Module):
    """A front end and its adapter: ``encode(x, x_lens) -> (B, N, D), (B,)`` at the shared width."""

    def __init__(self, front: nn.Module, adapter: ModalityAdapter) -> None:
        super().__init__()
        self.front, self.adapter = front, adapter

    def encode(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        h, lens = self.front(x, x_lens)
        return self.adapter(h, lens), lens


def build_adapter(cfg: UnifiedModelConfig, width: int) -> ModalityAdapter:
    """The adapter from a front end of ``width`` C into the shared width ``cfg.dim``."""
    layers = [BottleneckLayer(cfg.dim, cfg.adapter_bottleneck, cfg.dropout) for _ in range(cfg.adapter_layers)]
    return ModalityAdapter(nn.Linear(width, cfg.dim), layers, ZScore(cfg.dim, momentum=cfg.zscore_momentum))


def build_speech(cfg: UnifiedModelConfig, vocab: int) -> Modality:
    """Speech: CMVN (identity until the task loads the training statistics) + subsampling to ``speech_dim``."""
    width = cfg.speech_dim or cfg.dim
    sub = Conv2dSubsampling(cfg.input_dim, width, cfg.subsampling, channels=cfg.subsampling_channels)
    front = SpeechFrontEnd(sub, GlobalCMVN(cfg.input_dim), utterance_norm=cfg.utterance_norm)
    return Modality(front, build_adapter(cfg, width))


def build_text(cfg: UnifiedModelConfig, vocab: int) -> Modality:
    """Text: embeddings of ``text_dim`` over the model's one vocabulary (the pieces, not the tags)."""
    width = cfg.text_dim or cfg.dim
    embedding = nn.Embedding(vocab, width, padding_idx=PAD)
    nn.init.normal_(embedding.weight, std=width**-0.5)
    embedding.weight.data[PAD].zero_()
    return Modality(TextFrontEnd(embedding), build_adapter(cfg, width))


def build_image(cfg: UnifiedModelConfig, vocab: int) -> Modality:
    """Images: text lines at ``image_height`` pixels, the width reduced ``image_subsampling`` times, to ``image_dim``
    (pixel statistics default to mean 0.5, std 0.25 until the task sets the training images' ones)."""
    width = cfg.image_dim or cfg.dim
    front = ImageFrontend(cfg.image_height, width, factor=cfg.image_subsampling,
                          channels=cfg.subsampling_channels or width)
    return Modality(ImageFrontEnd(front), build_adapter(cfg, width))


MODALITIES: dict[str, Callable[[UnifiedModelConfig, int], Modality]] = {"speech": build_speech, "text": build_text,
                                                                        "image": build_image}
"""Input modality -> builder ``(model config, vocabulary) -> Modality``; ``model.inputs`` names its keys."""
