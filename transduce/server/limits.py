"""What the server accepts: ``ServeLimits`` and the checks that turn a request beyond them into a one-line
``LimitError`` with its HTTP status (413 for sizes, 400 for bad input, 401 for a missing key).

Also the reading of stream audio: ``PcmReader`` turns binary WebSocket frames of 16-bit little-endian mono
PCM (any size, odd byte counts carried over) into float samples, and detects a WAV header sent as the first
frame: a header that matches the stream (PCM 16-bit, mono, the stream's rate) is skipped, any other is refused
with a message saying what it holds.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


class LimitError(ValueError):
    """A request the server refuses: ``status`` is the HTTP status, the message one line for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(kw_only=True)
class ServeLimits:
    """Bounds on what one client may ask of the server."""

    max_body_bytes: int = 20_000_000
    """Largest request body (an audio file, a translate request) and largest WebSocket frame."""
    max_audio_seconds: float = 120.0
    """Longest audio of one /v1/transcribe request."""
    max_lines: int = 64
    """Most lines (sentences) in one /v1/translate request."""
    max_line_chars: int = 1000
    """Longest line of a /v1/translate request, in characters."""
    max_beam: int = 16
    """Largest beam (and nbest) a request may ask for."""
    max_streams: int = 64
    """Open WebSocket streams over all models; one more is closed with code 1013."""
    idle_seconds: float = 30.0
    """A stream that sends nothing for this long is closed (code 1001)."""
    queue_seconds: float = 2.0
    """Audio a stream may have buffered but not yet encoded; a faster client waits (is not read) until the
    encoder catches up, so memory stays bounded."""
    api_key: str | None = None
    """When set, every route but /health needs it (``Authorization: Bearer KEY``, ``X-API-Key`` or ``?api_key=``)."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_lines", "max_line_chars", "max_beam", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_audio_seconds", "idle_seconds", "queue_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def authorized(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether a request carries the API key (always, when none is set)."""
        if self.api_key is None:
            return True
        given = query.get("api_key") or headers.get("x-api-key")
        bearer = headers.get("authorization") or ""
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        return bool(given) and hmac.compare_digest(str(given).encode(), self.api_key.encode())

    def check_lines(self, text: object) -> list[str]:
        """The ``text`` field of a translate request as a list of lines, within the limits."""
        if isinstance(text, str):
            text = [text]
        if not isinstance(text, list) or not all(isinstance(line, str) for line in text):
            raise LimitError(400, "text: expected a string or a list of strings")
        if len(text) > self.max_lines:
            raise LimitError(413, f"text: {len(text)} lines; at most {self.max_lines} per request")
        for i, line in enumerate(text):
            if len(line) > self.max_line_chars:
                raise LimitError(413, f"text[{i}]: {len(line)} characters; at most {self.max_line_chars} per line")
            if "\n" in line or "\r" in line:
                raise LimitError(400, f"text[{i}]: a line break inside a line; send each line as its own string")
        return text

    def check_search(self, name: str, value: object, default: int) -> int:
        """``beam`` or ``nbest`` of a request: a whole number in 1..max_beam (``default`` when absent)."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.max_beam:
            raise LimitError(400, f"{name}: expected a whole number from 1 to {self.max_beam}, got {value!r}")
        return value

    def check_audio_seconds(self, seconds: float) -> None:
        if seconds > self.max_audio_seconds:
            raise LimitError(413, f"audio: {seconds:.1f} s; at most {self.max_audio_seconds:g} s per request")


async def read_body(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """A request body of at most ``limit`` bytes: refused from its Content-Length before reading, or as soon
    as the bytes read pass the limit (a chunked upload that declares nothing)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitError(413, f"request body: {int(declared)} bytes; at most {limit}")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise LimitError(413, f"request body: more than {limit} bytes")
    return bytes(body)


class PcmReader:
    """Binary stream frames -> float samples (n,) in [-1, 1]; a WAV header in the first frame is skipped when
    it describes 16-bit mono PCM at the stream's rate, else refused (``LimitError`` 400)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.first = True
        self.carry = b""  # an odd last byte, completed by the next frame
        self.header_skipped = False

    def read(self, data: bytes) -> Tensor:
        if self.first:
            self.first = False
            if data[:4] == b"RIFF":
                data = self._skip_header(data)
                self.header_skipped = True
        data = self.carry + data
        whole = len(data) - len(data) % 2
        self.carry = data[whole:]
        samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0  # (n,)
        return torch.from_numpy(samples)

    def _skip_header(self, data: bytes) -> bytes:
        """The bytes after the WAV header's ``data`` chunk header."""
        if data[8:12] != b"WAVE":
            raise LimitError(400, "the first frame starts with RIFF but is not a WAV file; send raw 16-bit PCM")
        pos, fmt = 12, None
        while pos + 8 <= len(data):
            chunk_id, size = struct.unpack("<4sI", data[pos : pos + 8])
            if chunk_id == b"fmt " and pos + 24 <= len(data):
                fmt = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])  # format, channels, rate, _, _, bits
            if chunk_id == b"data":
                if fmt is None:
                    break
                kind, channels, rate, _, _, bits = fmt
                if kind not in (1, 0xFFFE) or bits != 16 or channels != 1 or rate != self.sample_rate:
                    raise LimitError(400, f"the WAV header describes {'PCM' if kind in (1, 0xFFFE) else 'non-PCM'} "
                                          f"{bits}-bit, {channels} channel(s) at {rate} Hz; this stream takes 16-bit "
                                          f"mono PCM at {self.sample_rate} Hz")
                return data[pos + 8 :]
            pos += 8 + size + (size & 1)
        raise LimitError(400, "a WAV header without its fmt and data chunks in the first frame; send raw 16-bit "
                              "PCM, or the whole header in the first frame")
