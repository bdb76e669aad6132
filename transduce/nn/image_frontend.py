"""Image front end: a text-line image -> a left-to-right sequence of model vectors.

Dimension letters: B batch, W image columns (width in pixels), H image rows (the fixed height), C channels,
W' output frames, H' remaining rows, D model size.

A line image enters as pixel columns (B, W, H), the way speech enters as feature frames (B, T, F): columns are
normalized with the training images' mean and standard deviation (buffers, saved with the weights), then three
3x3 convolutions halve the height each time and stride along the width like the speech subsampling, unpadded
along the width: output frame t reads exactly columns [t * factor, t * factor + receptive_field), so padding
appended after an image never changes its valid outputs (padding invariance), and ``output_lengths`` is the
exact width-to-length arithmetic. The remaining (C, H') of each frame is projected to D. It satisfies
``nn.subsampling.FrontEnd`` (a speech encoder takes it in place of its subsampling) and, on its own,
the encoder contract ``encode(images, widths) -> (seq, lens)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transduce.nn.masks import padding_mask
from transduce.nn.subsampling import conv_lengths, right_context

WIDTH_LAYOUTS: dict[int, list[tuple[int, int]]] = {
    4: [(3, 2), (3, 2), (3, 1)],
    8: [(3, 2), (3, 2), (3, 2)],
}
"""Width reduction factor -> (kernel, stride) of each convolution along the width."""


def image_stats(images: list[Tensor]) -> tuple[float, float]:
    """Mean and standard deviation of every pixel of (W, H) images (float64 sums)."""
    count = sum(x.numel() for x in images)
    if count == 0:
        raise ValueError("no pixels to estimate image statistics on")
    total = sum(float(x.double().sum()) for x in images)
    squares = sum(float(x.double().square().sum()) for x in images)
    mean = total / count
    return mean, max(squares / count - mean * mean, 1e-12) ** 0.5


class ImageFrontend(nn.Module):
    """(B, W, H) pixel columns -> (B, W', D) with W' = output_lengths(W), about W / factor."""

    mean: Tensor
    std: Tensor

    def __init__(self, height: int, dim: int, *, factor: int = 4, channels: int = 64) -> None:
        super().__init__()
        if factor not in WIDTH_LAYOUTS:
            raise ValueError(f"image front end width factor must be one of {sorted(WIDTH_LAYOUTS)}, got {factor}")
        self.layout = WIDTH_LAYOUTS[factor]
        self.height, self.factor = height, factor
        rows = height
        for _ in self.layout:
            rows = (rows + 2 - 3) // 2 + 1  # height: kernel 3, stride 2, padding 1
        if height < 8:
            raise ValueError(f"image height {height} is too small (at least 8 pixels)")
        widths = [channels // 2, channels, channels]
        convs: list[nn.Module] = []
        previous = 1
        for (kernel, stride), width in zip(self.layout, widths, strict=True):
            convs += [nn.Conv2d(previous, width, (kernel, 3), (stride, 2), padding=(0, 1)), nn.ReLU()]
            previous = width
        self.conv = nn.Sequential(*convs)
        self.out = nn.Linear(previous * rows, dim)
        self.register_buffer("mean", torch.tensor(0.5))
        self.register_buffer("std", torch.tensor(0.25))
        self.right_context = right_context(self.layout)
        self.receptive_field = self.min_frames = self.right_context + 1

    def set_stats(self, mean: float, std: float) -> None:
        """The training images' pixel statistics (``image_stats``)."""
        self.mean.fill_(mean)
        self.std.fill_(std)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) image widths -> (B,) output frames (0 when narrower than the receptive field)."""
        out = conv_lengths(lengths, self.layout)
        assert isinstance(out, Tensor)
        return out.clamp(min=0)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, W, H) pixel columns in [0, 1] -> (B, W', D)."""
        if x.size(1) < self.receptive_field:
            raise ValueError(f"{x.size(1)} columns are fewer than the receptive field {self.receptive_field}")
        if x.size(2) != self.height:
            raise ValueError(f"images are {x.size(2)} pixels high, the front end takes {self.height}")
        h = self.conv(((x - self.mean) / self.std)[:, None])  # (B, 1, W, H) -> (B, C, W', H')
        b, c, w, rows = h.shape
        return self.out(h.permute(0, 2, 1, 3).reshape(b, w, c * rows))  # (B, W', C, H') -> (B, W', C H') -> D

    def encode(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, W, H) padded on the right, widths (B,) -> seq (B, W', D) with zeros past each length, lens."""
        lens = self.output_lengths(widths)
        seq = self(images)
        return seq.masked_fill(~padding_mask(lens, seq.size(1))[..., None], 0.0), lens
