"""Streaming voice activity detection with silero-vad, its recurrent state passed explicitly.

silero-vad scores fixed windows of W samples (512 at 16 kHz, 256 at 8 kHz: 32 ms either way). Each window
is scored together with the last C samples of the one before it (the context: 64 at 16 kHz, 32 at 8 kHz),
and an LSTM carries a (2, 1, 128) state from window to window. The package's scripted module keeps that
state and context in its own attributes (``reset_states()``), so one instance can serve only one stream.
Here the scripted module's inner network, a pure ``(x, state) -> (prob, state)`` function, is called
directly and the state lives in a ``VADState`` owned by the caller: one ``SileroVAD`` serves any number of
streams, and chunks of any size give exactly the probabilities of the whole signal. A test checks the
result against the package's own stateful forward, so a change of its internals fails loudly.

Dimension letters: n samples of a chunk, W window samples, C context samples, K windows scored.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

# sample rate -> (window samples W, context samples C, name of the scripted module's inner network)
_RATES: dict[int, tuple[int, int, str]] = {16000: (512, 64, "_model"), 8000: (256, 32, "_model_8k")}
_HIDDEN = 128  # LSTM size of silero-vad v5/v6


def default_model_path() -> Path:
    """The TorchScript weights shipped inside the ``silero-vad`` wheel (``silero_vad/data/silero_vad.jit``).

    Found without importing ``silero_vad``: its ``__init__`` calls ``torch.set_num_threads(1)`` for the
    whole process."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("silero-vad is not installed: pip install silero-vad (or pass path=)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: silero-vad's TorchScript weights are missing (pass path=)")
    return path


@dataclass
class VADState:
    """One stream's VAD state: the LSTM state, the previous window's tail and the samples still short
    of a whole window."""

    lstm: Tensor
    """(2, 1, H) LSTM hidden and cell state after the last window scored."""
    context: Tensor
    """(C,) the last C samples of the last window scored (zeros before the first)."""
    pending: Tensor
    """(r,) samples received but not scored yet, r < W."""
    windows: int = 0
    """Windows scored so far: window k covers samples [k W, (k + 1) W)."""


class SileroVAD:
    """Speech probability per 32 ms window, streamed: ``accept(pcm, state) -> (probs, state)``.

    Single-stream calls (no batch dimension); one instance serves many streams, each with its own
    ``init_state()``. Inference only, on the CPU.
    """

    def __init__(self, sample_rate: int = 16000, *, path: str | Path | None = None) -> None:
        if sample_rate not in _RATES:
            raise ValueError(
                f"silero-vad supports sample rates {sorted(_RATES)}, got {sample_rate}; "
                "resample first (transduce.data.audio.load_audio(path, 16000) does)"
            )
        self.sample_rate = sample_rate
        self.window, self.context_size, inner = _RATES[sample_rate]
        path = Path(path) if path is not None else default_model_path()
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format silero ships for torch
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location="cpu").eval()
        if not hasattr(scripted, inner):
            raise ValueError(f"{path}: not a silero-vad v5/v6 TorchScript model (no {inner} network)")
        self.model = getattr(scripted, inner)  # (x (1, C + W), state (2, 1, H)) -> (prob (1, 1), state)

    @property
    def frame_seconds(self) -> float:
        """Duration of one scored window: 0.032 s at both rates."""
        return self.window / self.sample_rate

    def init_state(self) -> VADState:
        """State of a new stream: zero LSTM state and context, nothing pending."""
        return VADState(lstm=torch.zeros(2, 1, _HIDDEN), context=torch.zeros(self.context_size), pending=torch.zeros(0))

    @torch.inference_mode()
    def accept(self, pcm: Tensor, state: VADState) -> tuple[Tensor, VADState]:
        """Next (n,) samples in [-1, 1] at ``sample_rate``, any n >= 0 -> speech probabilities (K,) of the
        whole windows now complete, and the new state (the input state is not modified)."""
        if pcm.dim() != 1:
            raise ValueError(f"expected mono samples of shape (n,), got {tuple(pcm.shape)}")
        samples = torch.cat([state.pending, pcm.detach().float().cpu()])  # (r + n,)
        k = samples.numel() // self.window
        lstm, context, probs = state.lstm, state.context, []
        for window in samples[: k * self.window].view(k, self.window):  # (W,) each
            x = torch.cat([context, window])[None]  # (1, C + W)
            prob, lstm = self.model(x, lstm)  # (1, 1), (2, 1, H)
            probs.append(prob[0, 0])
            context = window[-self.context_size :]
        out = torch.stack(probs) if probs else torch.zeros(0)  # (K,)
        return out, VADState(
            lstm=lstm, context=context.clone(), pending=samples[k * self.window :].clone(), windows=state.windows + k
        )

    def finish(self, state: VADState) -> tuple[Tensor, VADState]:
        """End of stream: score the pending samples zero-padded to a window (as silero's
        ``get_speech_timestamps`` does) -> (0 or 1 probabilities, state with nothing pending)."""
        if state.pending.numel() == 0:
            return torch.zeros(0), state
        return self.accept(torch.zeros(self.window - state.pending.numel()), state)

    def probabilities(self, pcm: Tensor) -> Tensor:
        """Whole signal (n,) -> probabilities (ceil(n / W),), the last window zero-padded."""
        probs, state = self.accept(pcm, self.init_state())
        last, _ = self.finish(state)
        return torch.cat([probs, last])
