"""The server's ``/metrics``: Prometheus text format through ``prometheus_client``.

One :class:`ServerMetrics` per server, each with its own ``CollectorRegistry`` (a process may run
several servers, as the tests do; the library's global registry would refuse the second).

Two kinds of numbers:

- events the server reports as they happen: refused connections (:meth:`rejected`), each frame's
  motion latency (:meth:`frame_sent`), and the totals of each session when it closes
  (:meth:`session_closed`);
- the state read at scrape time from a :class:`Snapshot` the server provides: open sessions,
  the open sessions' frames so far, the inference worker's counters.

Frames sent and dropped are the closed sessions' totals plus the open sessions' counts so far,
so the counters rise during a session and never fall when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS_S", "ServerMetrics", "Snapshot"]

# What generate_latest() writes: the text exposition format 0.0.4, read by every Prometheus.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Motion latency (audio in -> frame out) of a healthy server is 100-300 ms; the buckets are dense
# there and reach past 1 s, where a session is in trouble.
LATENCY_BUCKETS_S = (0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)


@dataclass(frozen=True)
class Snapshot:
    """The server's state at scrape time."""

    connections: int  # open WebSocket connections, hello or not
    sessions: int  # connections whose hello was accepted
    max_sessions: int
    frames_sent: int  # by the open sessions so far
    frames_dropped: int  # by the open sessions so far (slow readers lose their oldest frames)
    engine_busy_s: float  # seconds the inference worker spent running batches
    engine_batches: int
    engine_hops: int  # hop jobs, all sessions (a batch holds one or more)
    engine_queue_depth: int
    engine_worker_restarts: int = 0  # inference processes that died and were started again


class ServerMetrics:
    """The metrics of one server. ``snapshot`` is called at each scrape, on the event loop."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry()
        self._rejected = Counter(
            "talker_rejected_connections", "Connections refused, by reason: origin (at the "
            "handshake), or the error code of the close (bad_token, server_full, ...).",
            ["reason"], registry=self.registry)
        self._latency = Histogram(
            "talker_motion_latency_seconds", "Motion latency of each frame sent: from its "
            "audio's arrival to the frame going out.", buckets=LATENCY_BUCKETS_S,
            registry=self.registry)
        self._closed = _SessionTotals(snapshot)
        self.registry.register(self._closed)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(reason=reason).inc()

    def frame_sent(self, latency_ms: float) -> None:
        self._latency.observe(max(0.0, latency_ms) / 1000.0)

    def session_closed(self, frames_sent: int, frames_dropped: int) -> None:
        """A session's totals, once it is no longer in the snapshot's open sessions (in the same
        event-loop step, so that no scrape sees them twice or not at all)."""
        self._closed.frames_sent += frames_sent
        self._closed.frames_dropped += frames_dropped

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SessionTotals(Collector):
    """Scrape-time numbers: the snapshot, plus the closed sessions' totals."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self.frames_sent = 0
        self.frames_dropped = 0

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        yield GaugeMetricFamily("talker_connections", "Open WebSocket connections.",
                                value=s.connections)
        yield GaugeMetricFamily("talker_sessions", "Open sessions (accepted hellos).",
                                value=s.sessions)
        yield GaugeMetricFamily("talker_max_sessions", "Sessions the server accepts at once.",
                                value=s.max_sessions)
        yield CounterMetricFamily("talker_frames_sent", "Frames sent to clients.",
                                  value=self.frames_sent + s.frames_sent)
        yield CounterMetricFamily("talker_frames_dropped", "Frames dropped because a client "
                                  "read too slowly (its oldest unsent frames).",
                                  value=self.frames_dropped + s.frames_dropped)
        yield CounterMetricFamily("talker_inference_busy_seconds", "Seconds the inference "
                                  "worker spent running batches.", value=s.engine_busy_s)
        yield CounterMetricFamily("talker_inference_batches", "Batches the inference worker "
                                  "ran.", value=s.engine_batches)
        yield CounterMetricFamily("talker_inference_hops", "Hop jobs (one session's next "
                                  "frames) the inference worker ran.", value=s.engine_hops)
        yield GaugeMetricFamily("talker_inference_queue_depth", "Hop jobs waiting for the "
                                "inference worker.", value=s.engine_queue_depth)
        yield CounterMetricFamily("talker_inference_worker_restarts", "Inference processes "
                                  "that died or hung and were started again (their streams "
                                  "started afresh).", value=s.engine_worker_restarts)
