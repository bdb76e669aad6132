"""Convolutional front-end that shortens feature sequences by 4, 6 or 8 (WeNet/ESPnet ``Conv2dSubsampling``).

Dimension letters: B batch, T input frames, F feature bins, T' output frames, F' remaining feature
bins, C channels (= D), D model size.

The convolutions use no padding, so output frame t sees exactly input frames
[t * factor, t * factor + receptive_field): padding appended after a sequence never changes its
valid outputs, and a streaming front-end can feed ``(n - 1) * factor + receptive_field`` frames to
get n outputs.
"""

from __future__ import annotations

from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from transduce.nn.conformer_ops import channels_last

# factor -> (kernel, stride) of each time/frequency convolution
LAYOUTS: dict[int, list[tuple[int, int]]] = {
    4: [(3, 2), (3, 2)],
    6: [(3, 2), (5, 3)],
    8: [(3, 2), (3, 2), (3, 2)],
}


def conv_lengths(lengths: Tensor | int, layout: list[tuple[int, int]]) -> Tensor | int:
    """Exact output size after unpadded convolutions: (T - k) // s + 1 per layer."""
    for kernel, stride in layout:
        lengths = (lengths - kernel) // stride + 1
    return lengths


def right_context(layout: list[tuple[int, int]]) -> int:
    """Input frames after the first one that output frame 0 needs: sum of (k - 1) * (product of earlier strides)
    (e.g. [(3, 2), (3, 2)]: 2 + 2 * 2 = 6, a receptive field of 7)."""
    right, stride_product = 0, 1
    for kernel, stride in layout:
        right += (kernel - 1) * stride_product
        stride_product *= stride
    return right


class FrontEnd(Protocol):
    """What the speech encoders ask of the module in front of them (``Conv2dSubsampling``; the image front end
    ``nn/image_frontend.py``): (B, T, F) -> (B, T', D) with T' = output_lengths(T), output frame t reading input
    frames [t * factor, t * factor + receptive_field) of unpadded ``layout`` convolutions over T."""

    factor: int
    layout: list[tuple[int, int]]
    right_context: int
    receptive_field: int
    min_frames: int

    def output_lengths(self, lengths: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor) -> Tensor: ...


class Conv2dSubsampling(nn.Module):
    """(B, T, F) features -> (B, T', D) with T' = output_lengths(T), about T / factor."""

    def __init__(self, input_dim: int, dim: int, factor: int = 4, *, channels: int = 0) -> None:
        """``channels``: convolution channels (0 = ``dim``, as in WeNet/ESPnet; fewer is much cheaper,
        since the first convolutions run at nearly the full frame rate)."""
        super().__init__()
        if factor not in LAYOUTS:
            raise ValueError(f"subsampling factor must be one of {sorted(LAYOUTS)}, got {factor}")
        self.layout = LAYOUTS[factor]
        self.factor = factor
        freq = conv_lengths(input_dim, self.layout)
        assert isinstance(freq, int)
        if freq < 1:
            raise ValueError(f"input_dim {input_dim} is too small for subsampling by {factor}")
        width = channels or dim
        layers: list[nn.Module] = []
        previous = 1
        for kernel, stride in self.layout:
            layers += [nn.Conv2d(previous, width, kernel, stride), nn.ReLU()]
            previous = width
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(width * freq, dim)
        self.right_context = right_context(self.layout)
        self.receptive_field = self.right_context + 1
        self.min_frames = self.receptive_field  # the smallest input that yields one output frame

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) input frame counts -> (B,) output frame counts (0 when shorter than the receptive field)."""
        out = conv_lengths(lengths, self.layout)
        assert isinstance(out, Tensor)
        return out.clamp(min=0)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, F) -> (B, T', D). The convolutions run channels-last with in-place ReLUs (2x faster forward +
        backward than ``self.conv`` on (B, 1, T, F), the same values); ``out`` reads the (C, F') features of a frame
        in the (F', C) order of that layout, through its weight's columns permuted alike."""
        if x.size(1) < self.receptive_field:
            raise ValueError(f"{x.size(1)} frames are fewer than the receptive field {self.receptive_field}")
        h = x[..., None].permute(0, 3, 1, 2)  # (B, 1, T, F), channels-last strides
        for conv in (layer for layer in self.conv if isinstance(layer, nn.Conv2d)):
            h = F.conv2d(h, channels_last(conv.weight), conv.bias, conv.stride).relu_()  # (B, C, T', F') channels-last
        b, c, t, f = h.shape
        weight = self.out.weight.view(-1, c, f).transpose(1, 2).reshape(-1, f * c)  # (D, C F') -> (D, F' C)
        return F.linear(h.permute(0, 2, 3, 1).reshape(b, t, f * c), weight, self.out.bias)  # (B, T', F' C) -> D
