"""Kaldi-compatible log-mel filterbanks in torch, whole-utterance and streaming.

Matches lhotse's ``Wav2LogFilterBank`` (``torchaudio_compatible_mel_scale=True``, ``use_energy=False``,
``dither=0``) with ``snip_edges=True`` framing: frame i covers samples [i * S, i * S + L), so any
chunking of a stream yields the same frames as the whole signal.

Dimensions:
    B: batch, N: samples, T: frames, L: frame length in samples, S: frame shift in samples,
    K: FFT bins (n_fft // 2 + 1), M: mel bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(kw_only=True)
class FbankConfig:
    sample_rate: int = 16000
    """Sample rate of the input waveform in Hz."""
    num_mel_bins: int = 80
    """Number of triangular mel filters (output feature dimension)."""
    frame_length_ms: float = 25.0
    """Frame (window) length in milliseconds."""
    frame_shift_ms: float = 10.0
    """Hop between frame starts in milliseconds."""
    low_freq: float = 20.0
    """Lower edge of the first mel filter in Hz."""
    high_freq: float = -400.0
    """Upper edge of the last mel filter in Hz; <= 0 means offset from Nyquist (Kaldi convention)."""
    preemph: float = 0.97
    """Pre-emphasis coefficient applied inside each frame (0 disables)."""
    remove_dc_offset: bool = True
    """Subtract each frame's mean before pre-emphasis."""
    window: str = "povey"
    """Window function: povey, hanning, hamming or rectangular."""
    eps: float = torch.finfo(torch.float32).eps
    """Floor on mel energies before the log (lhotse and Kaldi use float32 epsilon)."""

    @property
    def frame_length(self) -> int:
        """L, frame length in samples (truncated as in Kaldi)."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        """S, frame shift in samples."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def n_fft(self) -> int:
        """FFT size: L rounded up to a power of two."""
        return 1 << (self.frame_length - 1).bit_length()


def num_frames(num_samples: int, cfg: FbankConfig) -> int:
    """Frames from ``num_samples`` with snip-edges framing: 0 if N < L else 1 + (N - L) // S."""
    if num_samples < cfg.frame_length:
        return 0
    return 1 + (num_samples - cfg.frame_length) // cfg.frame_shift


def frame_window(cfg: FbankConfig) -> torch.Tensor:
    """(L,) symmetric window as in Kaldi; povey is hann ** 0.85."""
    length = cfg.frame_length
    if cfg.window == "povey":
        return torch.hann_window(length, periodic=False).pow(0.85)  # in float32 as lhotse and torchaudio
    if cfg.window == "hanning":
        return torch.hann_window(length, periodic=False)
    if cfg.window == "hamming":
        return torch.hamming_window(length, periodic=False, alpha=0.54, beta=0.46)
    if cfg.window == "rectangular":
        return torch.ones(length)
    raise ValueError(f"unknown window {cfg.window!r}; expected povey, hanning, hamming or rectangular")


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def _inverse_mel(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


def vtln_warp_freq(freq: torch.Tensor, warp: float, low: float, high: float,
                   vtln_low: float = 100.0, vtln_high: float | None = None) -> torch.Tensor:
    """Kaldi's piecewise-linear VTLN warp of frequencies (Hz) inside [low, high]; others pass unchanged.

    Between the inflection points the map is ``f / warp``; below ``vtln_low * max(1, warp)`` and above
    ``vtln_high * min(1, warp)`` straight lines join it to the fixed ends ``low`` and ``high``, so the
    map is continuous, increasing and keeps the filterbank's range. ``vtln_high`` defaults to
    ``high - 500``; :func:`mel_matrix` passes Nyquist - 500, Kaldi's ``--vtln-high=-500``.
    """
    if warp <= 0:
        raise ValueError(f"VTLN warp factor must be positive, got {warp}")
    vtln_high = high - 500.0 if vtln_high is None else vtln_high
    if not low < vtln_low < vtln_high < high:
        raise ValueError(f"need low < vtln_low < vtln_high < high, got {low}, {vtln_low}, {vtln_high}, {high}")
    inner_low, inner_high = vtln_low * max(1.0, warp), vtln_high * min(1.0, warp)
    scale = 1.0 / warp
    slope_low = (scale * inner_low - low) / (inner_low - low)
    slope_high = (high - scale * inner_high) / (high - inner_high)
    out = torch.where(freq < inner_high, scale * freq, high + slope_high * (freq - high))
    out = torch.where(freq < inner_low, low + slope_low * (freq - low), out)
    return torch.where((freq < low) | (freq > high), freq, out)


def mel_matrix(cfg: FbankConfig, warp: float = 1.0) -> torch.Tensor:
    """(K, M) Kaldi triangular filters on the mel scale; the Nyquist bin gets weight 0 as in Kaldi.

    ``warp`` != 1 moves the filter edges with Kaldi's VTLN map (:func:`vtln_warp_freq`): the filter
    that sat at ``f`` Hz sits at ``f / warp``, so a speaker's formants at ``f`` read as formants at
    ``f * warp`` would without warping (vocal tract length perturbation when drawn at random).
    """
    nyquist = 0.5 * cfg.sample_rate
    high = cfg.high_freq + nyquist if cfg.high_freq <= 0 else cfg.high_freq
    if not (0.0 <= cfg.low_freq < nyquist and 0.0 < high <= nyquist and cfg.low_freq < high):
        raise ValueError(f"bad mel range: low_freq={cfg.low_freq}, high_freq={cfg.high_freq}, nyquist={nyquist}")
    mel_low, mel_high = (_mel(torch.tensor(f, dtype=torch.float64)) for f in (cfg.low_freq, high))
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    edges = mel_low + delta * torch.arange(cfg.num_mel_bins + 2, dtype=torch.float64)  # (M + 2,)
    if warp != 1.0:
        edges = _mel(vtln_warp_freq(_inverse_mel(edges), warp, cfg.low_freq, high, vtln_high=nyquist - 500.0))
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    fft_mel = _mel(cfg.sample_rate / cfg.n_fft * torch.arange(cfg.n_fft // 2, dtype=torch.float64))[None]  # (1, K-1)
    up, down = (fft_mel - left) / (center - left), (right - fft_mel) / (right - center)  # (M, K-1)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return nn.functional.pad(weights, (0, 1)).T.float()  # (K, M)


class Fbank(nn.Module):
    """Log-mel filterbank: (N,) -> (T, M) or (B, N) -> (B, T, M); deterministic (no dither)."""

    window: torch.Tensor
    mel: torch.Tensor

    def __init__(self, cfg: FbankConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FbankConfig()
        if not 0 < self.cfg.frame_shift <= self.cfg.frame_length:
            raise ValueError(
                f"need 0 < frame shift <= frame length, got {self.cfg.frame_shift}, {self.cfg.frame_length}"
            )
        self.register_buffer("window", frame_window(self.cfg), persistent=False)
        self.register_buffer("mel", mel_matrix(self.cfg), persistent=False)

    def forward(self, wave: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """``mel``: (K, M) filters to use instead of the module's (a VTLN-warped :func:`mel_matrix`)."""
        cfg = self.cfg
        if wave.dim() not in (1, 2):
            raise ValueError(f"wave must be (N,) or (B, N), got shape {tuple(wave.shape)}")
        batched = wave.dim() == 2
        x = wave if batched else wave[None]  # (B, N)
        if x.size(-1) < cfg.frame_length:
            out = x.new_zeros(x.size(0), 0, cfg.num_mel_bins)
            return out if batched else out[0]
        frames = x.unfold(-1, cfg.frame_length, cfg.frame_shift)  # (B, T, L)
        if cfg.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if cfg.preemph != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # (B, T, L), first sample replicated
            frames = frames - cfg.preemph * previous
        spectrum = torch.fft.rfft(frames * self.window, n=cfg.n_fft)  # (B, T, K)
        power = spectrum.abs() ** 2
        out = torch.matmul(power, self.mel if mel is None else mel.to(power)).clamp_min(cfg.eps).log()  # (B, T, M)
        return out if batched else out[0]


@dataclass
class FbankStreamState:
    """Samples not yet covered by a complete frame, and how many frames were emitted so far."""

    leftover: torch.Tensor
    """(R,) or (B, R) samples, R < L; the next frame starts at leftover[..., 0]."""
    frames_done: int = 0
    """Frames emitted since the start of the stream."""


def init_fbank_state(batch_size: int | None = None, device: torch.device | str | None = None) -> FbankStreamState:
    """Empty stream state; ``batch_size=None`` streams a single (N,) waveform."""
    shape = (0,) if batch_size is None else (batch_size, 0)
    return FbankStreamState(leftover=torch.zeros(shape, device=device))


def fbank_stream_step(
    fbank: Fbank, state: FbankStreamState, pcm: torch.Tensor
) -> tuple[torch.Tensor, FbankStreamState]:
    """Frames completed by the new chunk ``pcm`` ((n,) or (B, n)), and the new state.

    Returns (T_new, M) or (B, T_new, M). Concatenating the outputs over any chunking equals ``fbank(whole)``.
    """
    buffer = torch.cat([state.leftover.to(pcm.dtype), pcm], dim=-1)  # (..., R + n)
    count = num_frames(buffer.size(-1), fbank.cfg)
    frames = fbank(buffer)  # exactly `count` frames, each inside the buffer
    leftover = buffer[..., count * fbank.cfg.frame_shift :].clone()
    return frames, FbankStreamState(leftover=leftover, frames_done=state.frames_done + count)


class StreamingFbank:
    """Convenience wrapper holding a :class:`FbankStreamState` for one stream."""

    def __init__(self, fbank: Fbank) -> None:
        self.fbank = fbank
        self.state = self.init_state()

    def init_state(self) -> FbankStreamState:
        """Start a new stream, dropping any leftover samples."""
        self.state = init_fbank_state(device=self.fbank.mel.device)
        return self.state

    def accept(self, pcm: torch.Tensor) -> torch.Tensor:
        """(T_new, M) frames that became complete with the (n,) chunk ``pcm``."""
        frames, self.state = fbank_stream_step(self.fbank, self.state, pcm)
        return frames
