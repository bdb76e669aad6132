"""Log-mel filterbanks against lhotse's torch implementation, streaming == whole, and global CMVN."""

import json
import math
import warnings

import pytest
import torch
from lhotse.features.kaldi.layers import Wav2LogFilterBank

from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.features import (
    Fbank,
    FbankConfig,
    StreamingFbank,
    fbank_stream_step,
    init_fbank_state,
    mel_matrix,
    num_frames,
    vtln_warp_freq,
)


def _lhotse(cfg: FbankConfig) -> Wav2LogFilterBank:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lhotse warns that snip_edges=True is unusual for it
        return Wav2LogFilterBank(
            sampling_rate=cfg.sample_rate,
            frame_length=cfg.frame_length_ms / 1000,
            frame_shift=cfg.frame_shift_ms / 1000,
            remove_dc_offset=cfg.remove_dc_offset,
            preemph_coeff=cfg.preemph,
            window_type=cfg.window,
            dither=0.0,
            snip_edges=True,
            low_freq=cfg.low_freq,
            high_freq=cfg.high_freq,
            num_filters=cfg.num_mel_bins,
        )


def _sine(seconds: float, rate: int, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float()


CONFIGS = [
    FbankConfig(),
    FbankConfig(sample_rate=8000, num_mel_bins=40, window="hamming", remove_dc_offset=False, preemph=0.0),
    FbankConfig(frame_length_ms=20.0, frame_shift_ms=12.5, low_freq=64.0, high_freq=7000.0, window="hanning"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "8k-40-hamming", "custom-framing"])
def test_matches_lhotse(cfg):
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(3, cfg.sample_rate + 123, generator=generator) * 2 - 1  # (B, N)
    sine = _sine(1.3, cfg.sample_rate)[None]  # (1, N)
    for wave in (noise, sine):
        expected = _lhotse(cfg)(wave)
        ours = Fbank(cfg)(wave)
        assert ours.shape == expected.shape == (wave.size(0), num_frames(wave.size(1), cfg), cfg.num_mel_bins)
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_num_frames_arithmetic():
    cfg = FbankConfig()
    assert (cfg.frame_length, cfg.frame_shift, cfg.n_fft) == (400, 160, 512)
    fbank = Fbank(cfg)
    for n in (0, 1, 399, 400, 401, 559, 560, 561, 16000):
        expected = 0 if n < 400 else len(range(0, n - 400 + 1, 160))  # frame starts that fit entirely
        assert num_frames(n, cfg) == expected
        assert fbank(torch.zeros(n)).shape == (expected, 80)


def test_batched_equals_per_utterance():
    fbank = Fbank()
    waves = torch.randn(4, 5000, generator=torch.Generator().manual_seed(1)) * 0.1
    batched = fbank(waves)
    for b in range(4):
        torch.testing.assert_close(batched[b], fbank(waves[b]), atol=1e-5, rtol=0)


def _random_chunks(total: int, generator: torch.Generator) -> list[int]:
    sizes, done = [], 0
    choices = [1, 7, 159, 160, 399, 400, 401, 1000]
    while done < total:
        size = min(choices[int(torch.randint(len(choices), (1,), generator=generator))], total - done)
        sizes.append(size)
        done += size
    return sizes


def test_streaming_equals_whole():
    generator = torch.Generator().manual_seed(2)
    wave = torch.rand(9000, generator=generator) * 2 - 1
    fbank = Fbank()
    whole = fbank(wave)
    for _ in range(3):
        stream = StreamingFbank(fbank)
        parts = [stream.accept(chunk) for chunk in wave.split(_random_chunks(wave.numel(), generator))]
        assert stream.state.frames_done == whole.size(0)
        assert stream.state.leftover.numel() < fbank.cfg.frame_length
        torch.testing.assert_close(torch.cat(parts), whole, atol=1e-5, rtol=0)


def test_stream_step_is_pure_and_batched():
    fbank = Fbank()
    waves = torch.rand(2, 3000, generator=torch.Generator().manual_seed(3)) * 2 - 1
    state = init_fbank_state(batch_size=2)
    first, after = fbank_stream_step(fbank, state, waves[:, :1234])
    again, _ = fbank_stream_step(fbank, state, waves[:, :1234])  # the old state is untouched
    torch.testing.assert_close(first, again)
    second, final = fbank_stream_step(fbank, after, waves[:, 1234:])
    torch.testing.assert_close(torch.cat([first, second], dim=1), fbank(waves), atol=1e-5, rtol=0)
    assert final.frames_done == num_frames(3000, fbank.cfg)


def test_cmvn_stats_match_torch():
    generator = torch.Generator().manual_seed(4)
    utterances = [torch.randn(t, 5, generator=generator) * 3 + 7 for t in (10, 1, 33)]
    stats = CMVNStats(5)
    for feats in utterances:
        stats.add(feats)
    frames = torch.cat(utterances)
    torch.testing.assert_close(stats.mean, frames.mean(dim=0))
    torch.testing.assert_close(stats.std, frames.std(dim=0, correction=0))
    normalized = GlobalCMVN.from_stats(stats)(frames)
    torch.testing.assert_close(normalized.mean(dim=0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized.std(dim=0, correction=0), torch.ones(5), atol=1e-5, rtol=0)


def test_cmvn_merge_and_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(5)
    a_feats, b_feats = torch.randn(20, 3, generator=generator), torch.randn(7, 3, generator=generator) + 1
    a, b, both = CMVNStats(3), CMVNStats(3), CMVNStats(3)
    a.add(a_feats)
    b.add(b_feats)
    both.add(torch.cat([a_feats, b_feats]))
    a.merge(b)
    torch.testing.assert_close((a.mean, a.std, a.count), (both.mean, both.std, both.count))
    restored = CMVNStats.from_dict(json.loads(json.dumps(a.to_dict())))
    torch.testing.assert_close((restored.mean, restored.std), (a.mean, a.std))
    torch.save({"cmvn": a.to_dict()}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["cmvn"]
    assert CMVNStats.from_dict(loaded).count == a.count


def test_cmvn_floor_and_state_dict():
    stats = CMVNStats(2)
    stats.add(torch.tensor([[1.0, 0.0], [1.0, 2.0]]))  # first bin is constant
    assert stats.std[0].item() == pytest.approx(math.sqrt(1e-5))
    module = GlobalCMVN.from_stats(stats)
    fresh = GlobalCMVN(2)
    fresh.load_state_dict(module.state_dict())
    x = torch.randn(2, 4, 2)
    torch.testing.assert_close(fresh(x), module(x))
    with pytest.raises(ValueError, match="empty"):
        _ = CMVNStats(2).mean


def test_vtln_warp_is_kaldis_piecewise_linear_map():
    freq = torch.tensor([0.0, 20.0, 60.0, 110.0, 1000.0, 3000.0, 6000.0, 7000.0, 7300.0, 7600.0, 7900.0],
                        dtype=torch.float64)
    for warp in (0.85, 0.9, 1.1, 1.15):
        out = vtln_warp_freq(freq, warp, 20.0, 7600.0, vtln_high=7500.0)
        inner_low, inner_high = 100.0 * max(1.0, warp), 7500.0 * min(1.0, warp)
        for f, g in zip(freq.tolist(), out.tolist(), strict=True):
            if f < 20.0 or f > 7600.0:
                expected = f  # outside the filterbank: untouched
            elif f < inner_low:  # the line from (20, 20) to (inner_low, inner_low / warp)
                expected = 20.0 + (f - 20.0) * (inner_low / warp - 20.0) / (inner_low - 20.0)
            elif f < inner_high:
                expected = f / warp
            else:  # the line from (inner_high, inner_high / warp) to (7600, 7600)
                expected = 7600.0 + (f - 7600.0) * (7600.0 - inner_high / warp) / (7600.0 - inner_high)
            assert g == pytest.approx(expected, abs=1e-9), (warp, f)
        dense = vtln_warp_freq(torch.linspace(20.0, 7600.0, 5000, dtype=torch.float64), warp, 20.0, 7600.0)
        assert torch.all(dense.diff() > 0)  # increasing, so filters keep their order
        assert dense[0] == pytest.approx(20.0) and dense[-1] == pytest.approx(7600.0)
    with pytest.raises(ValueError, match="positive"):
        vtln_warp_freq(freq, 0.0, 20.0, 7600.0)


def test_warped_filterbank_hears_a_tone_as_the_tone_times_the_warp():
    """The warped filter that sat at f Hz sits at f / warp: a tone at f reads like a tone at f * warp."""
    cfg = FbankConfig()
    fbank = Fbank(cfg)
    torch.testing.assert_close(mel_matrix(cfg, 1.0), fbank.mel, rtol=0, atol=0)
    for warp in (0.88, 1.12):
        mel = mel_matrix(cfg, warp)
        assert mel.shape == fbank.mel.shape
        for tone in (1000.0, 1700.0, 3100.0, 5000.0):  # where the shift is over a filter wide
            warped = fbank(_sine(0.5, cfg.sample_rate, tone), mel).mean(0)  # (M,)
            plain = fbank(_sine(0.5, cfg.sample_rate, tone * warp)).mean(0)
            unwarped = fbank(_sine(0.5, cfg.sample_rate, tone)).mean(0)
            assert warped.argmax() == plain.argmax(), (warp, tone)
            assert abs(int(warped.argmax()) - int(unwarped.argmax())) >= 2, (warp, tone)
