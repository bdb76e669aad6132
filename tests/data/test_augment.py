"""Augmentation: SpecAugment masks and warp, speed perturbation, and additive noise at a measured SNR."""

import math

import numpy as np
import pytest
import torch
from lhotse.dataset import signal_transforms

from transduce.data.augment import (
    AugmentConfig,
    SpecAugmentConfig,
    add_noise,
    augment_wave,
    sample_spec_masks,
    sample_vtlp_warp,
    spec_augment,
    speed_perturb,
    warp_time,
    white_noise_like,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_frames", [5, 80, 300, 2000])
def test_masks_within_bounds_and_config(num_frames):
    cfg = SpecAugmentConfig(freq_masks=3, freq_width=27, time_masks=4, time_width=40, time_mask_ratio=0.05)
    max_time = min(40, int(0.05 * num_frames))
    for seed in range(20):
        freq, time = sample_spec_masks(num_frames, 80, cfg, _gen(seed))
        assert len(freq) == 3 and len(time) == 4
        assert all(0 <= w <= 27 and 0 <= s and s + w <= 80 for s, w in freq)
        assert all(0 <= w <= max_time and 0 <= s and s + w <= num_frames for s, w in time)


def test_masked_regions_exactly_zero_and_rest_untouched():
    cfg = SpecAugmentConfig(time_mask_ratio=None)
    feats = torch.rand(200, 80, generator=_gen(0)) + 1.0  # no zeros before masking
    for seed in range(10):
        out = spec_augment(feats, cfg, _gen(seed))
        freq, time = sample_spec_masks(200, 80, cfg, _gen(seed))  # the same draws, replayed
        masked = torch.zeros(200, 80, dtype=torch.bool)
        for s, w in freq:
            masked[:, s : s + w] = True
        for s, w in time:
            masked[s : s + w] = True
        assert (out[masked] == 0).all()
        assert torch.equal(out[~masked], feats[~masked])
    assert torch.equal(spec_augment(feats, cfg, _gen(3)), spec_augment(feats, cfg, _gen(3)))
    assert not torch.equal(spec_augment(feats, cfg, _gen(3)), spec_augment(feats, cfg, _gen(4)))


def test_time_warp_matches_lhotse(monkeypatch):
    feats = torch.randn(120, 40, generator=_gen(1))
    for center, warped in [(50, 40), (50, 62), (30, 30)]:
        draws = iter([center, warped])
        monkeypatch.setattr(signal_transforms.np.random, "randint", lambda *args, d=draws: next(d))
        expected = signal_transforms.time_warp(feats, factor=20)
        torch.testing.assert_close(warp_time(feats, center, warped), expected)


def test_spec_augment_warp_is_seeded_and_keeps_shape():
    cfg = SpecAugmentConfig(freq_masks=0, time_masks=0, time_warp=10)
    ramp = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 8)  # (T, F), frame index in every bin
    outs = [spec_augment(ramp, cfg, _gen(seed)) for seed in range(5)]
    assert all(o.shape == ramp.shape for o in outs)
    assert torch.equal(outs[0], spec_augment(ramp, cfg, _gen(0)))
    assert any(not torch.allclose(o, ramp) for o in outs)
    assert torch.equal(spec_augment(ramp, SpecAugmentConfig(freq_masks=0, time_masks=0), _gen(0)), ramp)


def _peak_hz(wave: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy() * np.hanning(wave.numel())))
    return float(np.argmax(spectrum)) * rate / wave.numel()


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.5])
def test_speed_perturb_changes_length_and_pitch(factor):
    rate = 16000
    t = torch.arange(rate, dtype=torch.float64) / rate
    wave = (0.5 * torch.sin(2 * math.pi * 500 * t)).float()
    out = speed_perturb(wave, factor, rate)
    assert abs(out.numel() - wave.numel() / factor) <= 1
    assert _peak_hz(out, rate) == pytest.approx(500 * factor, abs=2 * rate / out.numel())


def _snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    clean64 = clean.double()
    return 10 * math.log10(clean64.square().mean() / (noisy.double() - clean64).square().mean())


@pytest.mark.parametrize("snr", [-5.0, 0.0, 12.5, 30.0])
def test_add_noise_hits_snr(snr):
    generator = _gen(7)
    wave = torch.randn(16000, generator=generator) * 0.1
    short_noise = torch.rand(3001, generator=generator) - 0.5  # tiled to the wave's length
    long_noise = torch.rand(50000, generator=generator) - 0.5  # cropped
    for noise in (short_noise, long_noise, white_noise_like(wave, generator)):
        noisy = add_noise(wave, noise, snr, generator)
        assert noisy.shape == wave.shape and noisy.dtype == wave.dtype
        assert _snr_db(wave, noisy) == pytest.approx(snr, abs=0.01)


def test_add_noise_offset_is_random_but_seeded():
    wave = torch.randn(1000, generator=_gen(0))
    noise = torch.randn(5000, generator=_gen(1))
    assert torch.equal(add_noise(wave, noise, 10.0, _gen(2)), add_noise(wave, noise, 10.0, _gen(2)))
    assert not torch.equal(add_noise(wave, noise, 10.0, _gen(2)), add_noise(wave, noise, 10.0, _gen(3)))


def test_augment_wave_decisions():
    wave = torch.randn(8000, generator=_gen(0)) * 0.1
    off = AugmentConfig(speed_factors=(), noise_prob=0.0)
    assert augment_wave(wave, 16000, off, _gen(0)) is wave
    cfg = AugmentConfig(speed_factors=(0.9, 1.0, 1.1), noise_prob=1.0, snr_range=(5.0, 5.0))
    lengths = set()
    for seed in range(12):
        out = augment_wave(wave, 16000, cfg, _gen(seed))
        torch.testing.assert_close(out, augment_wave(wave, 16000, cfg, _gen(seed)))
        lengths.add(out.numel())
        if out.numel() == wave.numel():  # factor 1.0: only the noise was added
            assert _snr_db(wave, out) == pytest.approx(5.0, abs=0.01)
    assert lengths == {round(8000 / f) for f in (0.9, 1.0, 1.1)}


def test_vtlp_warp_draws_within_range_and_off_draws_nothing():
    generator = _gen(0)
    warps = [sample_vtlp_warp(AugmentConfig(vtlp_warp=0.1), generator) for _ in range(2000)]
    assert 0.9 <= min(warps) < 0.91 and 1.09 < max(warps) <= 1.1
    state = generator.get_state()
    assert sample_vtlp_warp(AugmentConfig(), generator) == 1.0
    assert torch.equal(generator.get_state(), state)  # off: earlier runs keep their random streams
    with pytest.raises(ValueError, match="vtlp_warp"):
        sample_vtlp_warp(AugmentConfig(vtlp_warp=0.5), generator)
