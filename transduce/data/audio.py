"""Reading and writing audio files, with errors that name the file.

Waveforms are float32 tensors of shape (N,) with samples in [-1, 1]; N is the number of samples.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from transduce.data.text import DataError

# WAV writers that cannot seek (pipes) leave a placeholder in the data chunk's size field.
_WAV_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)
_WAV_PLACEHOLDER_MIN = 0x7FFFF000
# Sample rates a header may claim: below this the file is not audio we can resample sensibly (a lying header
# of 1 Hz asks soxr for 16,000 output samples per input sample); above, libsndfile's own limit.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000


class AudioError(DataError):
    """A missing, unreadable, empty or truncated audio file; the message starts with the path."""


def _frames_and_rate(path: Path) -> tuple[int, int]:
    """(number of samples, sample rate) from the header of a readable, non-empty, complete audio file."""
    if not path.is_file():
        raise AudioError(f"{path}: {'a folder, not an audio file' if path.is_dir() else 'no such file'}")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{path}: not a readable audio file ({_one_line(err)})") from None
    if info.frames == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: the header's sample rate {info.samplerate} Hz is outside "
                         f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    missing = _wav_missing_bytes(path)
    if missing:
        raise AudioError(f"{path}: truncated WAV file, {missing} bytes of the data chunk are missing")
    return info.frames, info.samplerate


def _one_line(err: Exception) -> str:
    """libsndfile messages may span lines; a user error is printed on one."""
    return " ".join(str(err).split())


def _wav_missing_bytes(path: Path) -> int:
    """How many bytes a WAV's data chunk lacks compared with its header (0 for complete or non-WAV files).

    libsndfile silently clamps the frame count of a truncated WAV to the bytes present, so the
    header's promise is checked here by walking the RIFF chunks.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_len in _WAV_PLACEHOLDER_SIZES or chunk_len >= _WAV_PLACEHOLDER_MIN:
                    return 0
                return max(0, pos + 8 + chunk_len - size)
            pos += 8 + chunk_len + (chunk_len & 1)
    return 0


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Mono float32 waveform (N,) in [-1, 1] at ``sample_rate`` (soxr HQ resampling if the file's rate differs).

    Channels are averaged. Reads whatever soundfile reads (wav, flac, ogg, ...).
    """
    path = Path(path)
    frames, _ = _frames_and_rate(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if data.shape[0] != frames:
        raise AudioError(f"{path}: truncated, header promises {frames} samples but {data.shape[0]} were read")
    wave = data.mean(axis=1)  # (N,)
    if not np.isfinite(wave).all():  # float WAVs (or lying bit depths) can hold NaN/inf, which no clip repairs
        raise AudioError(f"{path}: {int((~np.isfinite(wave)).sum())} samples are NaN or infinite")
    if file_rate != sample_rate:
        wave = soxr.resample(wave, file_rate, sample_rate, quality="HQ")
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(wave))


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file's header (same errors as :func:`load_audio`)."""
    frames, rate = _frames_and_rate(Path(path))
    return frames / rate


def write_wav(path: str | Path, wave: torch.Tensor, sample_rate: int) -> None:
    """Write (N,) mono or (C, N) multichannel audio as 16-bit PCM WAV, clipping to [-1, 1] and creating parent dirs."""
    if wave.dim() not in (1, 2):
        raise ValueError(f"wave must be (N,) or (C, N), got shape {tuple(wave.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave.detach().to(torch.float32).clamp(-1.0, 1.0).cpu().numpy()
    sf.write(str(path), data.T if data.ndim == 2 else data, sample_rate, subtype="PCM_16", format="WAV")


def audio_blocks(path: str | Path, sample_rate: int = 16000, seconds: float = 10.0) -> Iterator[torch.Tensor]:
    """A file as mono float32 blocks (n,) of about ``seconds`` at ``sample_rate``, read and resampled block by
    block (soxr's streaming resampler), so memory stays bounded however long the file. Concatenated, the
    blocks are :func:`load_audio`'s waveform (to resampling rounding); same errors, raised as blocks are read."""
    path = Path(path)
    frames, file_rate = _frames_and_rate(path)
    step = max(1, round(seconds * file_rate))
    resampler = soxr.ResampleStream(file_rate, sample_rate, 1, dtype="float32", quality="HQ") \
        if file_rate != sample_rate else None
    read = 0
    try:
        with sf.SoundFile(str(path)) as f:
            while read < frames:
                data = f.read(min(step, frames - read), dtype="float32", always_2d=True)  # (n, C)
                if data.shape[0] == 0:
                    raise AudioError(f"{path}: truncated, header promises {frames} samples but {read} were read")
                read += data.shape[0]
                wave = data.mean(axis=1)  # (n,)
                if not np.isfinite(wave).all():
                    raise AudioError(f"{path}: samples near {read / file_rate:.1f} s are NaN or infinite")
                if resampler is not None:
                    wave = resampler.resample_chunk(wave, last=read >= frames)
                wave = np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)
                yield torch.from_numpy(np.ascontiguousarray(wave))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(err)})") from None
