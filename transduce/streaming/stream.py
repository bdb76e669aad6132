"""Feeding a whole recording to a stream as a live source would: ``feed``.

``Stream`` is the single-stream session that ``Recognizer.stream()`` returns (``streaming/session.py``);
many streams share encoder calls through ``streaming/batch.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch import Tensor

from transduce.streaming.session import Segment, StreamSession, StreamSettings, StreamStats

Stream = StreamSession
"""The name callers of ``Recognizer.stream()`` know the session by."""

__all__ = ["Segment", "Stream", "StreamSession", "StreamSettings", "StreamStats", "feed"]


def feed(stream: StreamSession, wave: Tensor, chunk_ms: float, on_partial: Callable[[str], None] | None = None,
         realtime: bool = False) -> list[Segment]:
    """Feed a whole (n,) waveform to ``stream`` ``chunk_ms`` of audio at a time, as a live source would
    (``realtime``: no faster than real time), calling ``on_partial`` when the partial text changes; returns
    every segment, the last ones from ``finalize``."""
    rate = stream.sample_rate
    step = max(1, round(chunk_ms / 1000 * rate))
    segments: list[Segment] = []
    shown = ""
    for start in range(0, wave.numel(), step):
        chunk = wave[start : start + step]
        segments += stream.accept(chunk)
        if on_partial is not None and stream.partial() != shown:
            shown = stream.partial()
            on_partial(shown)
        if realtime:
            time.sleep(max(0.0, chunk.numel() / rate - stream.stats.chunk_seconds[-1]))
    return segments + stream.finalize()
