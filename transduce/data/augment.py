"""Data augmentation: speed perturbation and additive noise on waveforms, vocal tract length
perturbation of the filterbank, SpecAugment on features.

Every random decision draws from an explicit ``torch.Generator`` (never the global RNG), so a batch is
reproducible from its seed. Dimensions: N: samples, T: frames, F: feature bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import soxr
import torch
from torch.nn import functional as F


@dataclass(kw_only=True)
class SpecAugmentConfig:
    freq_masks: int = 2
    """Number of frequency masks per utterance."""
    freq_width: int = 27
    """Maximum width of a frequency mask in bins (each width is uniform in [0, freq_width])."""
    time_masks: int = 2
    """Number of time masks per utterance."""
    time_width: int = 40
    """Maximum width of a time mask in frames."""
    time_mask_ratio: float | None = 0.05
    """If set, a time mask is also at most ``int(time_mask_ratio * T)`` frames (adaptive to the length)."""
    time_warp: int = 0
    """Maximum time warp in frames (0 = off); bicubic interpolation as in SpecAugment, Espresso and lhotse."""


@dataclass(kw_only=True)
class AugmentConfig:
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    """Speed factors drawn uniformly per utterance; empty disables speed perturbation."""
    noise_prob: float = 0.0
    """Probability of adding noise to an utterance."""
    snr_range: tuple[float, float] = (10.0, 30.0)
    """Signal-to-noise ratio in dB, drawn uniformly from this range."""
    vtlp_warp: float = 0.0
    """Vocal tract length perturbation: each utterance's filterbank is warped by a factor drawn uniformly
    from [1 - vtlp_warp, 1 + vtlp_warp] (Jaitly and Hinton 2013; Kaldi's VTLN map); 0 disables."""
    spec: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    """SpecAugment settings, applied to normalized features."""


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _spans(count: int, max_width: int, size: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """``count`` (start, width) spans with width uniform in [0, max_width] and start + width <= size."""
    spans = []
    for _ in range(count):
        width = _randint(0, max_width, generator)
        spans.append((_randint(0, size - width, generator), width))
    return spans


def sample_spec_masks(
    num_frames: int, num_bins: int, cfg: SpecAugmentConfig, generator: torch.Generator
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(start, width) spans of the frequency masks and of the time masks, all within bounds."""
    max_time = min(cfg.time_width, num_frames)
    if cfg.time_mask_ratio is not None:
        max_time = min(max_time, int(cfg.time_mask_ratio * num_frames))
    freq = _spans(cfg.freq_masks, min(cfg.freq_width, num_bins), num_bins, generator)
    return freq, _spans(cfg.time_masks, max_time, num_frames, generator)


def warp_time(feats: torch.Tensor, center: int, warped: int) -> torch.Tensor:
    """(T, F) -> (T, F): frames [0, center) stretched to [0, warped), the rest to [warped, T), bicubic."""
    if warped == center:
        return feats
    x = feats[None, None]  # (1, 1, T, F)
    num_frames, num_bins = feats.shape
    left = F.interpolate(x[:, :, :center], size=(warped, num_bins), mode="bicubic", align_corners=False)
    right = F.interpolate(x[:, :, center:], size=(num_frames - warped, num_bins), mode="bicubic", align_corners=False)
    return torch.cat([left, right], dim=2)[0, 0]


def spec_augment(feats: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(T, F) -> (T, F): optional time warp, then masks set to 0 (the mean, so apply after CMVN)."""
    num_frames, num_bins = feats.shape
    out = feats.clone()
    warp = cfg.time_warp
    if warp > 0 and num_frames - warp > warp + 1:  # same condition and ranges as lhotse's time_warp
        center = _randint(warp + 1, num_frames - warp - 1, generator)
        out = warp_time(out, center, _randint(center - warp, center + warp, generator))
    freq_spans, time_spans = sample_spec_masks(num_frames, num_bins, cfg, generator)
    for start, width in freq_spans:
        out[:, start : start + width] = 0.0
    for start, width in time_spans:
        out[start : start + width] = 0.0
    return out


def speed_perturb(wave: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """(N,) -> (~N / factor,): faster and higher-pitched for factor > 1, like Kaldi's ``sox speed``.

    Resamples from ``sample_rate * factor`` to ``sample_rate`` with soxr (HQ).
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return wave
    data = wave.detach().cpu().numpy().astype(np.float32, copy=False)
    out = soxr.resample(data, sample_rate * factor, sample_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out)).to(wave.device)


def white_noise_like(wave: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise with the shape and dtype of ``wave`` (for when no noise recordings exist)."""
    return torch.randn(wave.shape, generator=generator, dtype=wave.dtype).to(wave.device)


def add_noise(wave: torch.Tensor, noise: torch.Tensor, snr_db: float, generator: torch.Generator) -> torch.Tensor:
    """(N,) wave plus (M,) noise, tiled and cropped from a random offset, scaled so the SNR is ``snr_db``.

    SNR = 10 log10(mean(wave^2) / mean(scaled_noise^2)). A silent noise segment leaves ``wave`` unchanged.
    """
    if noise.dim() != 1 or noise.numel() == 0:
        raise ValueError(f"noise must be a non-empty (M,) tensor, got shape {tuple(noise.shape)}")
    length = wave.size(-1)
    offset = _randint(0, noise.numel() - 1, generator)
    repeats = math.ceil((offset + length) / noise.numel())
    segment = noise.to(torch.float64).repeat(repeats)[offset : offset + length]  # (N,)
    signal_power = wave.to(torch.float64).square().mean()
    noise_power = segment.square().mean()
    if noise_power == 0:
        return wave
    scale = torch.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (wave.to(torch.float64) + scale * segment.to(wave.device)).to(wave.dtype)


def sample_vtlp_warp(cfg: AugmentConfig, generator: torch.Generator) -> float:
    """A warp factor uniform in [1 - vtlp_warp, 1 + vtlp_warp]; 1.0 without drawing when VTLP is off."""
    if not 0.0 <= cfg.vtlp_warp < 0.5:
        raise ValueError(f"vtlp_warp must be in [0, 0.5), got {cfg.vtlp_warp}")
    if cfg.vtlp_warp == 0.0:
        return 1.0
    return _uniform(1.0 - cfg.vtlp_warp, 1.0 + cfg.vtlp_warp, generator)


def augment_wave(
    wave: torch.Tensor,
    sample_rate: int,
    cfg: AugmentConfig,
    generator: torch.Generator,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N,) -> (N',): a random speed factor, then with probability ``noise_prob`` noise at a random SNR.

    Without ``noise`` recordings, white noise is used.
    """
    if cfg.speed_factors:
        factor = cfg.speed_factors[_randint(0, len(cfg.speed_factors) - 1, generator)]
        wave = speed_perturb(wave, factor, sample_rate)
    if cfg.noise_prob > 0 and float(torch.rand((), generator=generator)) < cfg.noise_prob:
        snr = _uniform(*cfg.snr_range, generator)
        wave = add_noise(wave, white_noise_like(wave, generator) if noise is None else noise, snr, generator)
    return wave
