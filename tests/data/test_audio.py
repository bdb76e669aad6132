"""Audio loading: formats, downmix, resampling, and errors that name the file."""

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from transduce.data.audio import AudioError, audio_duration, load_audio, write_wav
from transduce.data.text import DataError

RATE = 8000
FREQ = 440.0


def _stereo(seconds: float = 0.5) -> np.ndarray:
    """(N, 2) float32: a sine on the left, half of it on the right, so the mono mean is 0.75 * sine."""
    t = np.arange(int(seconds * RATE)) / RATE
    left = 0.8 * np.sin(2 * np.pi * FREQ * t)
    return np.stack([left, 0.5 * left], axis=1).astype(np.float32)


@pytest.mark.parametrize("ext, tol", [("wav", 2e-3), ("flac", 2e-3), ("ogg", 5e-2)])
def test_load_downmixes_and_resamples(tmp_path, ext, tol):
    path = tmp_path / f"a.{ext}"
    stereo = _stereo()
    sf.write(path, stereo, RATE)
    wave = load_audio(path, sample_rate=16000)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.numel() - 2 * len(stereo)) <= 1
    t = np.arange(wave.numel()) / 16000
    expected = 0.75 * 0.8 * np.sin(2 * np.pi * FREQ * t)
    inner = slice(200, -200)  # resampler and codec edge effects
    np.testing.assert_allclose(wave.numpy()[inner], expected[inner], atol=tol)
    assert audio_duration(path) == pytest.approx(len(stereo) / RATE, abs=1e-3)


def test_native_rate_is_mean_of_channels(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, _stereo(), RATE)
    data, _ = sf.read(path, dtype="float32")
    torch.testing.assert_close(load_audio(path, sample_rate=RATE), torch.from_numpy(data.mean(axis=1)))


def test_resampling_equals_soxr_hq(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _stereo()[:, :1], RATE)
    data, _ = sf.read(path, dtype="float32")
    reference = soxr.resample(data, RATE, 22050, quality="HQ")
    torch.testing.assert_close(load_audio(path, sample_rate=22050), torch.from_numpy(reference))


def test_write_wav_round_trip(tmp_path):
    wave = torch.linspace(-0.9, 0.9, 1000)
    path = tmp_path / "sub" / "dir" / "x.wav"
    write_wav(path, wave, 16000)
    assert sf.info(path).subtype == "PCM_16"
    torch.testing.assert_close(load_audio(path), wave, atol=1 / 32768, rtol=0)


def _assert_error(path, words):
    for fn in (load_audio, audio_duration):
        with pytest.raises(AudioError) as info:
            fn(path)
        message = str(info.value)
        assert message.startswith(str(path)), message
        assert words in message, message
        assert isinstance(info.value, DataError)


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nope.wav", "no such file")


def test_random_bytes(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _assert_error(path, "not a readable audio file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    _assert_error(path, "not a readable audio file")


def test_wav_with_no_samples(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), RATE)
    _assert_error(path, "empty")


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _stereo(), RATE, subtype="PCM_16")
    full = path.read_bytes()
    assert load_audio(path, sample_rate=RATE).numel() == len(_stereo())  # complete file is fine
    path.write_bytes(full[: len(full) // 2])
    _assert_error(path, "truncated")


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, _stereo(), RATE)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match=f"^{path}"):
        load_audio(path)
