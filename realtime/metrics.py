"""Latency bookkeeping: percentiles over a recent, bounded window.

Percentiles use linear interpolation between closest ranks (numpy's default ``"linear"``
method), the same definition the benchmarks use, so that the ``stats`` message and the benchmark
JSON agree.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LatencySummary", "LatencyWindow", "SendClock", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation; NaN if empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in 0..100, got {q}")
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class SendClock:
    """Client side: when each piece of audio was sent, so that a frame's ``t`` maps to the send
    time of the audio it depicts (client-side motion latency = received - sent_at(t))."""

    def __init__(self) -> None:
        self._starts: list[float] = []  # audio time (s) of each piece's first sample
        self._sent: list[float] = []  # monotonic send time of each piece

    def record(self, audio_t: float, now: float) -> None:
        self._starts.append(audio_t)
        self._sent.append(now)

    def sent_at(self, audio_t: float) -> float | None:
        i = bisect.bisect_right(self._starts, audio_t) - 1
        return self._sent[i] if i >= 0 else None


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles in milliseconds over the window; ``None`` when the window is empty."""

    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class LatencyWindow:
    """Latencies of the last ``window_s`` seconds, at most ``max_samples`` of them.

    Memory is bounded by ``max_samples`` whatever the frame rate; when that bound bites the
    window is the last ``max_samples`` values.
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 1024) -> None:
        if window_s <= 0 or max_samples < 1:
            raise ValueError(
                f"need window_s > 0 and max_samples >= 1, got {window_s}, {max_samples}"
            )
        self.window_s = window_s
        self._items: deque[tuple[float, float]] = deque(maxlen=max_samples)  # (now, value_ms)

    def add(self, value_ms: float, now: float) -> None:
        self._items.append((now, value_ms))

    def __len__(self) -> int:
        return len(self._items)

    def summary(self, now: float) -> LatencySummary:
        """Percentiles of the values added in ``(now - window_s, now]``."""
        while self._items and self._items[0][0] <= now - self.window_s:
            self._items.popleft()
        values = [v for _, v in self._items]
        if not values:
            return LatencySummary(0, None, None, None)
        p50, p95, p99 = (float(x) for x in np.percentile(values, [50.0, 95.0, 99.0]))
        return LatencySummary(len(values), p50, p95, p99)
