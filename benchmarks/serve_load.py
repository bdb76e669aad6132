"""Load test of ``transduce serve`` on loopback: live streams and translate requests against a server it starts.

Run:
    nice -n 10 .venv/bin/python benchmarks/serve_load.py --streams 8 32
    nice -n 10 .venv/bin/python benchmarks/serve_load.py --streams 8 --churn-minutes 10 --no-translate

Streams: N WebSocket clients at once, each sending --stream-seconds of real speech (FSDD recordings at
../shared/data/fsdd, resampled to 16 kHz, joined with short pauses, different per stream) in 100 ms packets at
real time, then ``{"type": "end"}``. Measured per stream: RTF (wall seconds from the first packet to the close,
over audio seconds: 1.0 plus the tail), partial latency (from the packet that completed the newest whole chunk
to the event received: events come from whole chunks, so this is the wait the client sees once a chunk's audio
is in), errors (error events, closes other than 1000, exceptions); for the server, the encoder compute RTF
(summed round seconds from /metrics over the audio seconds streamed) and its resident memory at start, peak
(sampled every 0.5 s) and end. --churn-minutes keeps N streams opening and closing for that long and prints the
RSS after the first minute and at the end.

Translation: 1, 8 and 32 clients each sending one sentence per request (Multi30k test 2016 lines) for
--translate-seconds, against the batched server and a --no-batching one: requests/s and p95 latency.
Everything is bounded in count and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import websockets

from transduce.data.text import read_lines

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
RATE, PACKET_MS = 16000, 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``transduce serve`` in a subprocess on a free loopback port; its RSS read from /metrics."""

    def __init__(self, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "transduce", "serve", "--port", str(self.port), *flags],
                                     cwd=REPO, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def stream_audio(index: int, seconds: float) -> np.ndarray:
    """~``seconds`` of int16 PCM at 16 kHz: FSDD digits in groups of 3-5 with 0.15 s gaps, 1.2 s between groups."""
    import soundfile as sf
    import soxr

    files = sorted(FSDD.glob("*.wav"))
    rng = random.Random(index)
    parts: list[np.ndarray] = []
    total = 0
    while total < seconds * RATE:
        for _ in range(rng.randint(3, 5)):
            wave, rate = sf.read(rng.choice(files), dtype="float32")
            parts += [soxr.resample(wave, rate, RATE), np.zeros(int(0.15 * RATE), np.float32)]
        parts.append(np.zeros(int(1.2 * RATE), np.float32))
        total = sum(len(p) for p in parts)
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype(np.int16)


async def one_stream(url: str, audio: np.ndarray, chunk_seconds: float) -> dict:
    """Feed ``audio`` at real time; latencies of the events, RTF, errors."""
    step = RATE * PACKET_MS // 1000
    chunk = int(chunk_seconds * RATE)
    completed: list[float] = []  # send time of the packet that completed chunk k
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()

    async def receive(ws) -> int:
        nonlocal errors
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "error":
                errors += 1
            elif completed:
                latencies.append(time.perf_counter() - completed[-1])
        return ws.close_code

    try:
        async with websockets.connect(url, max_size=None) as ws:
            reader = asyncio.create_task(receive(ws))
            for i, start in enumerate(range(0, len(audio), step)):
                await asyncio.sleep(max(0.0, started + i * PACKET_MS / 1000 - time.perf_counter()))
                await ws.send(audio[start : start + step].tobytes())
                if (start + step) // chunk > start // chunk:
                    completed.append(time.perf_counter())
            await ws.send(json.dumps({"type": "end"}))
            code = await asyncio.wait_for(reader, 120)
            errors += code != 1000
    except Exception:  # noqa: BLE001 - counted, reported
        errors += 1
    return {"rtf": (time.perf_counter() - started) / (len(audio) / RATE), "latencies": latencies, "errors": errors}


async def sample_rss(server: Server, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak.append(await asyncio.to_thread(server.metric, "process_resident_memory_bytes"))
        await asyncio.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def streams_run(server: Server, n: int, seconds: float, chunk_ms: float) -> None:
    url = f"ws://127.0.0.1:{server.port}/v1/stream?sample_rate={RATE}"
    audios = [stream_audio(i, seconds) for i in range(n)]
    rounds_before = server.metric("transduce_stream_round_seconds_sum")
    rss_start, samples, stop = server.metric("process_resident_memory_bytes"), [], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, samples, stop))
    results = await asyncio.gather(*(one_stream(url, a, chunk_ms / 1000) for a in audios))
    stop.set()
    await sampler
    audio_seconds = sum(len(a) for a in audios) / RATE
    compute = server.metric("transduce_stream_round_seconds_sum") - rounds_before
    latencies = [x for r in results for x in r["latencies"]]
    rtfs = [r["rtf"] for r in results]
    rss_end = server.metric("process_resident_memory_bytes")
    print(f"streams {n:3d} x {audio_seconds / n:4.1f} s, chunk {chunk_ms:g} ms: "
          f"RTF per stream mean {statistics.mean(rtfs):.3f} max {max(rtfs):.3f}; server compute RTF "
          f"{compute / audio_seconds:.4f}; partial latency p50 {percentile(latencies, 50) * 1000:.0f} ms "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms ({len(latencies)} events); errors "
          f"{sum(r['errors'] for r in results)}; RSS start {rss_start / 1e6:.0f} MB peak "
          f"{max(samples + [rss_start]) / 1e6:.0f} MB end {rss_end / 1e6:.0f} MB", flush=True)


async def churn(server: Server, n: int, minutes: float, chunk_ms: float) -> None:
    """N streams at a time of 3-8 s each, a new one as soon as one closes, for ``minutes``."""
    url = f"ws://127.0.0.1:{server.port}/v1/stream?sample_rate={RATE}"
    pool = [stream_audio(100 + i, 8.0) for i in range(16)]
    started, errors, count = time.monotonic(), 0, 0
    rss_first: float | None = None
    rng = random.Random(7)

    async def worker() -> None:
        nonlocal errors, count
        while time.monotonic() - started < minutes * 60:
            audio = rng.choice(pool)[: int(rng.uniform(3, 8) * RATE)]
            errors += (await one_stream(url, audio, chunk_ms / 1000))["errors"]
            count += 1

    async def watch() -> None:
        nonlocal rss_first
        await asyncio.sleep(60)
        rss_first = server.metric("process_resident_memory_bytes")

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(worker() for _ in range(n)))
    await watcher
    end, first = server.metric("process_resident_memory_bytes"), rss_first or 0.0
    print(f"churn {minutes:g} min, {n} at a time: {count} streams, errors {errors}; RSS after 1 min "
          f"{first / 1e6:.0f} MB, at the end {end / 1e6:.0f} MB (growth {(end - first) / 1e6:+.0f} MB)", flush=True)


async def translate_run(server: Server, clients: int, seconds: float, lines: list[str]) -> tuple[float, float]:
    """Requests/s and p95 latency (s) of ``clients`` clients for ``seconds``."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        await http.post("/v1/translate", json={"text": [lines[0]]})  # warm up
        deadline = time.perf_counter() + seconds

        async def client(i: int) -> None:
            k = i
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await http.post("/v1/translate", json={"text": [lines[k % len(lines)]]})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)
                k += clients

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, percentile(latencies, 95)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, nargs="*", default=[8, 32], help="concurrent streams per run")
    p.add_argument("--stream-seconds", type=float, default=12.0, help="audio per stream")
    p.add_argument("--chunk-ms", type=float, default=320.0, help="the server's --chunk-ms")
    p.add_argument("--churn-minutes", type=float, default=0.0, help="then streams opening and closing this long")
    p.add_argument("--clients", type=int, nargs="*", default=[1, 8, 32], help="concurrent translate clients")
    p.add_argument("--translate-seconds", type=float, default=8.0, help="per translate run")
    p.add_argument("--no-translate", action="store_true")
    args = p.parse_args()
    if args.streams or args.churn_minutes:
        server = Server("--chunk-ms", str(args.chunk_ms), "--max-streams", "256")
        try:
            for n in args.streams:
                asyncio.run(streams_run(server, n, args.stream_seconds, args.chunk_ms))
            if args.churn_minutes:
                asyncio.run(churn(server, max(args.streams or [8]), args.churn_minutes, args.chunk_ms))
        finally:
            server.stop()
    if args.no_translate:
        return
    lines = read_lines(REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.en.gz")[:500]
    for label, flags in (("batched", ()), ("unbatched", ("--no-batching",))):
        server = Server("--model", str(REPO / "models" / "multi30k-en-de"), *flags)
        try:
            for clients in args.clients:
                rps, p95 = asyncio.run(translate_run(server, clients, args.translate_seconds, lines))
                print(f"translate {label:9s} {clients:3d} clients: {rps:6.1f} requests/s, p95 {p95 * 1000:6.0f} ms",
                      flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
