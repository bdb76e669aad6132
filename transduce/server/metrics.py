"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library:
counters and histograms by label, gauges read when scraped, and the process's resident memory.

    metrics = Metrics()
    metrics.count("transduce_requests_total", route="/v1/translate")
    metrics.observe("transduce_request_seconds", 0.031, route="/v1/translate")
    metrics.gauge("transduce_active_streams", lambda: hub_count())
    text = metrics.render()
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the latency histograms."""

HELP = {
    "transduce_requests_total": ("counter", "Requests (HTTP) and streams (WebSocket) by route."),
    "transduce_errors_total": ("counter", "Requests and streams that ended in an error, by route and HTTP status."),
    "transduce_request_seconds": ("histogram", "Seconds from request to response, by route."),
    "transduce_stream_round_seconds": ("histogram", "Seconds of one batched encoder round over the open streams."),
    "transduce_stream_round_streams": ("histogram", "Streams advanced together in one encoder round."),
    "transduce_translate_batch_lines": ("histogram", "Lines translated together in one batched search."),
    "transduce_translate_search_seconds": ("histogram", "Seconds of one (batched) translation search."),
    "transduce_active_streams": ("gauge", "Open WebSocket streams."),
    "transduce_translate_queue": ("gauge", "Translate requests waiting for a batch."),
    "process_resident_memory_bytes": ("gauge", "Resident memory of the server process."),
}

Labels = tuple[tuple[str, str], ...]
_INF = 'le="+Inf"'


def resident_bytes() -> int:
    """The process's resident set size now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def add(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.n += 1


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters, histograms and scrape-time gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._gauges: dict[str, Callable[[], float]] = {"process_resident_memory_bytes": resident_bytes}

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, bounds: tuple[float, ...] = BUCKETS, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._histograms.setdefault(name, {}).setdefault(key, _Histogram(bounds)).add(value)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """A gauge whose value ``read()`` gives at scrape time."""
        self._gauges[name] = read

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (0 when never counted)."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                _header(lines, name, "counter")
                lines += [f"{name}{_labels(k)} {_number(v)}" for k, v in sorted(series.items())]
            for name, hists in sorted(self._histograms.items()):
                _header(lines, name, "histogram")
                for key, hist in sorted(hists.items()):
                    running = 0
                    for bound, count in zip(hist.bounds, hist.counts, strict=True):
                        running += count
                        le = 'le="' + f"{bound:g}" + '"'
                        lines.append(f"{name}_bucket{_labels(key, le)} {running}")
                    lines.append(f"{name}_bucket{_labels(key, _INF)} {hist.n}")
                    lines.append(f"{name}_sum{_labels(key)} {hist.total:.6g}")
                    lines.append(f"{name}_count{_labels(key)} {hist.n}")
        for name, read in sorted(self._gauges.items()):
            _header(lines, name, "gauge")
            lines.append(f"{name} {_number(float(read()))}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Whole numbers without exponent or fraction (RSS in bytes), others as Python writes them."""
    return str(int(value)) if value.is_integer() else repr(value)


def _header(lines: list[str], name: str, kind: str) -> None:
    lines.append(f"# HELP {name} {HELP.get(name, (kind, name))[1]}")
    lines.append(f"# TYPE {name} {kind}")
