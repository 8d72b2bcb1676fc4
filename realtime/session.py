"""The transport-free core of one streaming session: audio in, hop requests out, frames out.

A :class:`Session` is a plain object with *feed* and *drain* methods and no I/O; every method
takes ``now`` (monotonic seconds), so tests script time exactly. The adapters (WebSocket,
WebRTC, microphone) and the inference worker drive it::

    session.feed_audio(samples, now, rate_hz)   # adapter, per received chunk (any rate)
    audio = session.identity_pick_audio()       # identity "auto": once, the audio to pick from
    for req in session.ready_hops(now): ...     # worker: run the model on req.samples
    session.complete_hop(req.request_id, coeffs, now)
    for frame in session.drain_frames(now): ... # adapter: send them now (this is the send time)

Input rate
    Audio arrives at the client's rate; the session resamples it to the model's
    ``sample_rate_hz`` with one streaming resampler (the library resampler that training uses),
    made when a rate first arrives and flushed by :meth:`end`.

Timeline
    Audio is mono float32 at the model's rate on a session timeline of samples. Frame ``k``
    depicts audio time ``t_k = k / fps``; its sample is ``s(k) = floor(k * sample_rate / fps)``.
    Frames are generated in hops of ``hop_frames`` (one frame by default: a frame is generated
    as soon as its audio and the look-ahead have arrived), or of a power-of-two multiple of it
    up to ``max_hop_frames`` when more frames are ready at once (a session catching up after a
    slow round). Sizes are powers of two so that a worker that batches hops of equal size
    across sessions sees few distinct sizes.

Hop requests (the model contract)
    The hop starting at frame ``F`` with ``n`` frames is ready once timeline samples up to
    ``need = s(F + n - 1) + lookahead + 1`` have arrived (``lookahead = round(lookahead_s *
    sample_rate)``), or once the stream has ended: then the last hops cover the remaining
    frames (the last one may be shorter than ``hop_frames``) and their samples are padded with
    zeros up to ``need``
    (``padding_samples``). A request hands over exactly the samples the model has not seen yet,
    ``[sample_start, need)``: between resets every timeline sample is handed over exactly once,
    in order, look-ahead included. ``reset_state=True`` starts a fresh model stream whose first
    sample is ``s(F)`` (the first request, and the first one after an interrupt or a skip).
    At most ``max_in_flight_hops`` requests are outstanding; the worker must complete a
    session's requests in order of ``request_id`` (it may complete them in one batch).

Motion latency
    latency of frame ``k`` = (time :meth:`drain_frames` returns it) - (time the audio sample
    ``s(k)`` arrived through :meth:`feed_audio`). Frames eased after an interrupt, whose audio
    was dropped, count from the interrupt.

Drop policy (DESIGN §6) -- the only places where data is discarded:
    1. Audio in is never dropped on arrival; received audio leaves the session only inside a
       hop request, a skipped hop, a dropped hop (4.) or an ``interrupt``. The buffer is bounded
       by pacing, not by dropping: a sender more than ``max_ahead_s`` ahead of real time (a
       leaky bucket: audio received, drained at real-time rate, never below zero, so silence
       earns no credit) is told to wait, :meth:`read_delay_s`, and the adapter reads nothing
       more from it meanwhile (backpressure: no error, the client's sends just block). A file
       sent "as fast as possible" thus flows at real time plus ``max_ahead_s``. With stale
       skipping (2.) buffered audio stays under about ``max_ahead_s`` + one message (1 s) +
       ``stale_window_s`` + one hop and look-ahead. Control messages queued behind held-back
       audio wait with it, at most the time one message takes to drain (about 1 s).
    2. Stale hops: before issuing requests (in :meth:`feed_audio` and :meth:`ready_hops`), the
       next hop is skipped while it is ready and its first frame is more than
       ``stale_window_s`` overdue. A frame is due when its audio arrived, or, when the client
       sends faster than real time (a file), when that audio would have arrived in real time
       (first arrival + t_k): a fast sender is served at least at real-time pace, not skipped.
       A skipped hop is never generated: its frames are not sent (a gap
       in ``seq``), each counts in ``dropped_frames``, the hop in ``skipped_hops``, and the next
       request has ``reset_state=True``. This bounds buffered audio to about ``stale_window_s``
       plus one hop and look-ahead when the worker falls behind or stalls.
    3. Frames out: the outgoing queue holds at most ``max_pending_frames``; adding to a full
       queue drops the oldest frame, counted in ``dropped_frames``.
    4. Bad model output: a hop whose coefficients or vertex offsets are not finite is dropped
       like a skipped hop (a gap in ``seq``, its frames in ``dropped_frames``, the hop in
       ``failed_hops``, not ``skipped_hops``) and the next request has ``reset_state=True``:
       the model stream starts afresh instead of carrying a poisoned state. The session goes on.

Control overtakes data
    :meth:`set_identity`, :meth:`interrupt` and :meth:`end` act on the next hop to be
    requested, however much audio is buffered: a switch starts blending at that hop's first
    frame, an interrupt discards the buffered audio behind it.

Identity "auto"
    A session opened with identity ``"auto"`` runs on :data:`MEAN_IDENTITY` while it collects
    the first ``identity_pick_s`` of audio (only that much is kept); then
    :meth:`identity_pick_audio` hands it over once, the adapter asks the model for the nearest
    learned identity off the event loop and reports it with :meth:`identity_picked`, which blends
    to it like a switch. An explicit :meth:`set_identity` first cancels the pick; an interrupt
    restarts the collection.

Identity switch
    Frames ``F0 + j`` (``F0`` = next frame to request) get ``alpha = min(1, (j + 1) / B)``,
    ``B = identity_blend_frames``: the ``B``-th new frame is fully the new identity. A switch
    during a blend starts from whichever identity dominates the last requested frame.

Interrupt
    Drops buffered audio not yet handed to the model and sets ``reset_state`` on the next
    request. Output is multiplied by a gain that falls linearly from its current value to 0
    over ``interrupt_ease_frames`` frames, starting at the first frame not yet output
    (in-flight hops are eased when they complete). If the in-flight frames end before the ease
    does, the session synthesises the rest (the last model frame times the gain; no model run,
    no audio); new audio resumes after them, at full gain, with a fresh model stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from realtime.audio import StreamingResampler
from realtime.metrics import LatencyWindow

if TYPE_CHECKING:
    from models.net.contract import ModelContract

__all__ = [
    "AUTO_IDENTITY",
    "MEAN_IDENTITY",
    "HopRequest",
    "IdentityBlend",
    "OutFrame",
    "Session",
    "SessionConfig",
    "SessionStats",
]


AUTO_IDENTITY = "auto"  # hello.identity asking the server to pick the nearest learned style
MEAN_IDENTITY = "mean"  # the average learned identity: used before "auto" has picked one


@dataclass(frozen=True)
class SessionConfig:
    """Timing, buffering and smoothing of one session. The first four fields come from the
    model's contract (:meth:`for_model`); the rest are policy."""

    fps: int  # output frame rate; frame k depicts audio time k / fps
    sample_rate_hz: int  # the model's audio rate: input at other rates is resampled to it
    # Future audio the model needs beyond a hop's last frame (the audio encoder's right
    # receptive field and the feature window). Adds directly to motion latency.
    lookahead_s: float
    identity_pick_s: float  # audio heard before identity "auto" picks the nearest style
    # Frames per model call: 1 = a frame is generated as soon as its audio (plus look-ahead) is
    # in, with no wait for a fuller hop (3 frames waited up to 67 ms more).
    hop_frames: int = 1
    # Most frames in one call when several are ready (a session catching up): hop_frames times a
    # power of two, at most this.
    max_hop_frames: int = 8
    # Outgoing queue bound: 3 s of frames for a client that stops reading; oldest dropped.
    max_pending_frames: int = 90
    identity_blend_frames: int = 15  # 0.5 s cross-fade of identity embeddings on a switch
    interrupt_ease_frames: int = 6  # 0.2 s ease to the neutral face after an interrupt
    # A ready hop whose first frame's audio is older than this is skipped: its frames would
    # arrive too late to look live. math.inf disables skipping (and the audio bound with it).
    stale_window_s: float = 1.0
    # How far a sender may run ahead of real time before the adapter stops reading it (drop
    # policy 1). 5 s absorbs any network burst; a file upload is paced to real time + 5 s.
    # math.inf disables the bound.
    max_ahead_s: float = 5.0
    # Requests outstanding at once. 1 suits a worker that batches across sessions: a session's
    # hops depend on each other through the model state anyway.
    max_in_flight_hops: int = 1
    latency_window_s: float = 10.0  # span of the latency percentiles in `stats`
    latency_window_max: int = 1024  # most latencies kept for them (memory bound)

    def __post_init__(self) -> None:
        positive = ("fps", "sample_rate_hz", "hop_frames", "max_hop_frames", "max_pending_frames",
                    "max_in_flight_hops", "latency_window_max")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"SessionConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("identity_blend_frames", "interrupt_ease_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"SessionConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.lookahead_s < 10.0:
            raise ValueError(
                f"SessionConfig.lookahead_s must be in [0, 10), got {self.lookahead_s}"
            )
        if not self.stale_window_s > 0 or not self.latency_window_s > 0:
            raise ValueError("SessionConfig.stale_window_s and latency_window_s must be > 0")
        if not self.max_ahead_s > 0:
            raise ValueError(f"SessionConfig.max_ahead_s must be > 0, got {self.max_ahead_s}")

    @property
    def lookahead_samples(self) -> int:
        return round(self.lookahead_s * self.sample_rate_hz)

    @property
    def identity_pick_samples(self) -> int:
        return round(self.identity_pick_s * self.sample_rate_hz)

    @staticmethod
    def for_model(contract: ModelContract, **policy: Any) -> SessionConfig:
        """The session settings a model's contract dictates, plus ``policy`` overrides."""
        return SessionConfig(fps=contract.fps, sample_rate_hz=contract.sample_rate_hz,
                             lookahead_s=contract.lookahead_s,
                             identity_pick_s=contract.identity_pick_s, **policy)


@dataclass(frozen=True)
class IdentityBlend:
    """Per-frame identity mix: ``(1 - alpha) * e[from_identity] + alpha * e[to_identity]``."""

    from_identity: str
    to_identity: str
    alpha: float  # 0..1


@dataclass(frozen=True)
class HopRequest:
    """Work for the model: generate ``n_frames`` frames from ``frame_start`` (see module doc)."""

    request_id: int
    frame_start: int  # session-local index of the first new frame
    n_frames: int  # hop_frames times a power of two (<= max_hop_frames); the last may be fewer
    samples: NDArray[np.float32] = field(repr=False)  # (S,) new 16 kHz samples, in order
    sample_start: int  # timeline index of samples[0]
    padding_samples: int  # trailing zeros in `samples` past the end of the stream
    reset_state: bool  # start a fresh model stream at sample s(frame_start) before this hop
    identity: tuple[IdentityBlend, ...]  # one per new frame


@dataclass(frozen=True)
class OutFrame:
    """A frame to send: coefficients of the motion basis (the adapter makes vertices)."""

    seq: int  # = frame index; gaps only where frames were dropped (counted)
    t: float  # seconds, seq / fps
    coeffs: NDArray[np.float32] = field(repr=False)  # (K,)
    # (V, 3) vertex offsets from the template when the worker decoded them (vertex frames),
    # eased like the coefficients; None for coefficient frames.
    offsets: NDArray[np.float32] | None = field(repr=False)
    latency_ms: float


class SessionStats(TypedDict):
    """Fields of the protocol's ``stats`` message (``Stats(**session.stats(now))``)."""

    frames_sent: int
    dropped_frames: int
    skipped_hops: int
    queue_depth: int
    audio_received_s: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


@dataclass
class _PlanItem:
    """A run of frames in output order: a model hop, a skipped hop, or synthesised ease."""

    kind: str  # "model" | "skip" | "synth"
    start: int
    n: int
    arrivals: list[float] = field(default_factory=list)  # of each frame's audio sample
    coeffs: NDArray[np.float32] | None = None  # model output once completed
    offsets: NDArray[np.float32] | None = None  # (n, V, 3) decoded by the worker, if asked


@dataclass(frozen=True)
class _Ease:
    start: int  # first eased frame (P)
    frames: int  # E
    gain0: float  # gain of the last frame output before the interrupt
    until: int  # frames >= until belong to the new model stream: gain 1


@dataclass(frozen=True)
class _Queued:
    seq: int
    coeffs: NDArray[np.float32]
    offsets: NDArray[np.float32] | None
    arrival: float


class _ChunkBuffer:
    """Timeline samples ``[start, end)`` held as a list of chunks: appending copies only a
    small tail (tiny chunks are merged up to ``_MERGE`` samples, so that a client sending one
    sample a message does not make a list of millions), reading copies only what is read, and
    trimming drops whole chunks from the front."""

    _MERGE = 4096  # samples: a chunk shorter than this takes the next one into itself

    def __init__(self) -> None:
        self._chunks: deque[NDArray[np.float32]] = deque()
        self.start = 0  # timeline index of the first held sample
        self.end = 0  # one past the last

    @property
    def size(self) -> int:
        return self.end - self.start

    def append(self, x: NDArray[np.float32]) -> None:
        if not x.size:
            return
        if self._chunks and self._chunks[-1].size < self._MERGE:
            self._chunks[-1] = np.concatenate([self._chunks[-1], x])
        else:
            self._chunks.append(x)
        self.end += x.size

    def read(self, a: int, b: int, pad_to: int = 0) -> NDArray[np.float32]:
        """A new array of samples ``[a, b)`` (``start <= a``, ``b <= end``) followed by
        ``pad_to`` zeros."""
        out = np.zeros(max(b - a, 0) + pad_to, dtype=np.float32)
        pos = self.start
        for chunk in self._chunks:
            if pos >= b:
                break
            lo, hi = max(a, pos), min(b, pos + chunk.size)
            if lo < hi:
                out[lo - a : hi - a] = chunk[lo - pos : hi - pos]
            pos += chunk.size
        return out

    def trim(self, keep: int) -> None:
        """Forget samples before ``keep`` (a partly kept chunk is cut to a view)."""
        while self._chunks and self.start < keep:
            head = self._chunks[0]
            cut = min(keep - self.start, head.size)
            if cut == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[cut:]
            self.start += cut

    def clear(self, at: int) -> None:
        """Forget everything; the timeline goes on at ``at``."""
        self._chunks.clear()
        self.start = self.end = at


class Session:
    """One client's streaming state. Not thread-safe: one owner calls it (see module doc)."""

    def __init__(self, config: SessionConfig, identity: str) -> None:
        """``identity``: a learned style's name, or :data:`AUTO_IDENTITY` (see module doc)."""
        self.config = config
        cfg = self.config
        self._resampler: StreamingResampler | None = None  # for input not at the model's rate
        # identity "auto": audio collected for the pick (None once picked, cancelled or never)
        self._pick_audio: list[NDArray[np.float32]] | None = None
        self._pick_heard = 0
        self._picking = False  # the pick audio was handed over; awaiting identity_picked()
        if identity == AUTO_IDENTITY:
            identity, self._pick_audio = MEAN_IDENTITY, []
        self._lookahead = cfg.lookahead_samples
        # audio timeline: samples [_buf.start, _received) are buffered
        self._buf = _ChunkBuffer()
        self._received = 0  # R: end of the timeline
        self._consumed = 0  # C: samples handed to the current model stream
        self._audio_in = 0  # every sample ever fed (stats)
        # frames
        self._next_frame = 0  # F: first frame not yet requested or skipped
        self._next_out = 0  # first frame not yet queued or passed over
        self._reset_pending = True
        self._plan: deque[_PlanItem] = deque()
        self._in_flight: dict[int, _PlanItem] = {}
        self._next_request_id = 0
        self._queue: deque[_Queued] = deque()
        self._last_raw: NDArray[np.float32] | None = None
        self._last_offsets: NDArray[np.float32] | None = None
        self._last_gain = 1.0
        self._ease: _Ease | None = None
        self._coeff_dim: int | None = None
        # Arrival time of sample s(k) for frames k in [_arr_base, _arr_base + len(_arrivals)),
        # kept from F on (requested frames carry theirs in the plan): bounded by the buffer.
        self._arrivals: deque[float] = deque()
        self._arr_base = 0
        self._first_arrival: float | None = None  # when the first sample arrived
        # leaky bucket of audio ahead of real time (drop policy 1): level at _ahead_at
        self._ahead_level_s = 0.0
        self._ahead_at = 0.0
        # identity blend
        self._id_from = identity
        self._id_to = identity
        self._blend_start: int | None = None
        # end of stream and counters
        self._ended = False
        self.frames_sent = 0
        self.dropped_frames = 0
        self.skipped_hops = 0
        self.failed_hops = 0  # hops dropped for non-finite model output (drop policy 4)
        self._latency = LatencyWindow(cfg.latency_window_s, cfg.latency_window_max)

    # ------------------------------------------------------------------ timeline helpers
    def _sample_of(self, frame: int) -> int:
        return frame * self.config.sample_rate_hz // self.config.fps

    def _frames_total(self) -> int:
        """After end: frames whose time lies inside the received audio, ceil(R * fps / sr)."""
        sr, fps = self.config.sample_rate_hz, self.config.fps
        return (self._received * fps + sr - 1) // sr

    def _frames_ready(self) -> int:
        """Frames from F on whose audio and look-ahead have all arrived (all after end)."""
        if self._ended:
            return self._frames_total() - self._next_frame
        x = self._received - self._lookahead - 1  # the last sample the look-ahead allows
        if x < 0:
            return 0
        sr, fps = self.config.sample_rate_hz, self.config.fps
        last = ((x + 1) * fps - 1) // sr  # the largest k with s(k) <= x
        return max(0, last - self._next_frame + 1)

    def _next_hop(self, min_frames: int = 1) -> tuple[int, int, bool] | None:
        """(n_frames, need, ready) of the hop at F, or None when no hop remains; before the
        end, a hop is ready only once ``min_frames`` frames (at most max_hop_frames) are."""
        cfg = self.config
        ready = self._frames_ready()
        if self._ended and ready <= 0:
            return None
        n = cfg.hop_frames
        while 2 * n <= min(ready, cfg.max_hop_frames):
            n *= 2
        if self._ended:
            n = min(n, ready)
        elif ready < min(min_frames, cfg.max_hop_frames):
            return n, self._sample_of(self._next_frame + n - 1) + self._lookahead + 1, False
        need = self._sample_of(self._next_frame + n - 1) + self._lookahead + 1
        return n, need, self._ended or need <= self._received

    def _arrival(self, frame: int) -> float:
        return self._arrivals[frame - self._arr_base]

    def _due(self, frame: int) -> float:
        """When frame ``frame`` is due: its audio's arrival, or, for a sender ahead of real
        time (a file sent fast), the time that audio would have arrived from a live source."""
        first = self._first_arrival if self._first_arrival is not None else 0.0
        return max(self._arrival(frame), first + frame / self.config.fps)

    def _prune_arrivals(self) -> None:
        while self._arrivals and self._arr_base < self._next_frame:
            self._arrivals.popleft()
            self._arr_base += 1

    def _trim_buffer(self) -> None:
        # Keep look-ahead already handed over until its hop is requested: a reset (after a
        # skip) re-reads the timeline from s(F).
        keep = self._sample_of(self._next_frame)
        if not self._reset_pending:
            keep = min(keep, self._consumed)
        self._buf.trim(keep)

    # ------------------------------------------------------------------ audio in
    def feed_audio(self, samples: ArrayLike, now: float, rate_hz: int | None = None) -> None:
        """Append mono samples (1-D, finite) received at ``now``, at ``rate_hz`` (default: the
        model's rate; other rates go through this session's resampler)."""
        if self._ended:
            raise ValueError("feed_audio() after end()")
        x = np.array(samples, dtype=np.float32)  # a copy: the buffer keeps it, not the caller
        if x.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {x.shape}")
        rate = self.config.sample_rate_hz if rate_hz is None else rate_hz
        if rate != self.config.sample_rate_hz:
            if self._resampler is None or self._resampler.in_rate_hz != rate:
                self._resampler = StreamingResampler(rate, self.config.sample_rate_hz)
            x = self._resampler.push(x)
        self._append(x, now)

    def _append(self, x: NDArray[np.float32], now: float) -> None:
        self._collect_for_pick(x)
        if self._first_arrival is None and x.size:
            self._first_arrival = now
        self._audio_in += x.size
        self._buf.append(x)
        self._received += x.size
        self._fill_ahead(x.size / self.config.sample_rate_hz, now)
        self._log_arrivals(now)
        self._skip_stale(now)

    def _collect_for_pick(self, x: NDArray[np.float32]) -> None:
        if self._pick_audio is None or self._picking:
            return
        take = x[: max(0, self.config.identity_pick_samples - self._pick_heard)]
        if take.size:
            self._pick_audio.append(take.copy())
            self._pick_heard += take.size

    def _log_arrivals(self, now: float) -> None:
        k = self._arr_base + len(self._arrivals)
        while self._sample_of(k) < self._received:
            self._arrivals.append(now)
            k += 1

    # ------------------------------------------------------------------ hops
    def ready_hops(self, now: float, min_frames: int = 1) -> list[HopRequest]:
        """Skip stale hops, then issue every ready hop allowed by ``max_in_flight_hops``.
        ``min_frames``: wait until that many frames are ready (a loaded worker's hint: fewer,
        larger hops of one size batch better across sessions); the last hops go regardless."""
        self._skip_stale(now)
        requests: list[HopRequest] = []
        while len(self._in_flight) < self.config.max_in_flight_hops:
            hop = self._next_hop(min_frames)
            if hop is None or not hop[2]:
                break
            requests.append(self._issue(hop[0], hop[1], now))
        return requests

    def _issue(self, n: int, need: int, now: float) -> HopRequest:
        start_frame = self._next_frame
        start = self._sample_of(start_frame) if self._reset_pending else self._consumed
        avail = min(need, self._received)
        padding = need - max(avail, start)
        samples = self._buf.read(start, avail, pad_to=max(padding, 0))  # a fresh array
        request = HopRequest(
            request_id=self._next_request_id,
            frame_start=start_frame,
            n_frames=n,
            samples=samples,
            sample_start=start,
            padding_samples=max(padding, 0),
            reset_state=self._reset_pending,
            identity=tuple(self._identity_at(start_frame + j) for j in range(n)),
        )
        arrivals = [self._arrival(start_frame + j) for j in range(n)]
        item = _PlanItem("model", start_frame, n, arrivals)
        self._plan.append(item)
        self._in_flight[request.request_id] = item
        self._next_request_id += 1
        self._next_frame += n
        self._consumed = need
        self._reset_pending = False
        self._trim_buffer()
        self._prune_arrivals()
        return request

    def _skip_stale(self, now: float) -> None:
        while True:
            hop = self._next_hop()
            if hop is None or not hop[2]:
                break
            if now - self._due(self._next_frame) <= self.config.stale_window_s:
                break
            n = hop[0]
            self._plan.append(_PlanItem("skip", self._next_frame, n))
            self._next_frame += n
            self.dropped_frames += n
            self.skipped_hops += 1
            self._reset_pending = True
            self._trim_buffer()
            self._prune_arrivals()
        self._advance(now)

    def complete_hop(self, request_id: int, coeffs: ArrayLike, now: float,
                     offsets: NDArray[np.float32] | None = None) -> None:
        """Hand back the model output for a request: ``coeffs`` of shape (n_frames, K), and,
        for vertex frames, the vertex ``offsets`` (n_frames, V, 3) the worker decoded."""
        item = self._in_flight.get(request_id)
        if item is None:
            raise ValueError(f"unknown or already completed request_id {request_id}")
        c = np.asarray(coeffs, dtype=np.float32)
        if c.ndim != 2 or c.shape[0] != item.n:
            raise ValueError(f"coeffs must have shape ({item.n}, K), got {c.shape}")
        if self._coeff_dim is not None and c.shape[1] != self._coeff_dim:
            raise ValueError(f"coeffs have K={c.shape[1]}, earlier hops had {self._coeff_dim}")
        if offsets is not None and len(offsets) != item.n:
            raise ValueError(f"offsets must have {item.n} frames, got {len(offsets)}")
        self._coeff_dim = c.shape[1]
        del self._in_flight[request_id]
        if not np.isfinite(c).all() or (offsets is not None and not np.isfinite(offsets).all()):
            self._drop_failed(item)  # drop policy 4: the session goes on
        else:
            item.coeffs = c
            item.offsets = offsets
        self._advance(now)

    def _drop_failed(self, item: _PlanItem) -> None:
        item.kind = "skip"
        self.dropped_frames += item.n
        self.failed_hops += 1
        self._reset_pending = True  # no later hop builds on the model state that produced it
        self._trim_buffer()

    # ------------------------------------------------------------------ frames out
    def _advance(self, now: float) -> None:
        """Move every resolved plan item at the head into the outgoing queue, in frame order."""
        while self._plan:
            item = self._plan[0]
            if item.kind == "model":
                if item.coeffs is None:
                    break
                for j in range(item.n):
                    self._last_raw = item.coeffs[j]
                    self._last_offsets = None if item.offsets is None else item.offsets[j]
                    self._queue_frame(item.start + j, item.coeffs[j], self._last_offsets,
                                      item.arrivals[j])
            elif item.kind == "synth" and self._last_raw is not None:
                for j in range(item.n):
                    self._queue_frame(item.start + j, self._last_raw, self._last_offsets,
                                      item.arrivals[j])
            self._next_out = item.start + item.n
            self._plan.popleft()

    def _gain(self, k: int) -> float:
        ease = self._ease
        if ease is None:
            return 1.0
        if k >= ease.until:
            self._ease = None
            return 1.0
        if ease.frames == 0:
            return 0.0
        return ease.gain0 * max(0.0, 1.0 - (k - ease.start + 1) / ease.frames)

    def _queue_frame(self, k: int, raw: NDArray[np.float32], offsets: NDArray[np.float32] | None,
                     arrival: float) -> None:
        gain = self._gain(k)
        self._last_gain = gain
        coeffs = raw if gain == 1.0 else (raw * np.float32(gain)).astype(np.float32)
        if offsets is not None and gain != 1.0:  # the basis is linear: ease the offsets alike
            offsets = (offsets * np.float32(gain)).astype(np.float32)
        if len(self._queue) >= self.config.max_pending_frames:
            self._queue.popleft()
            self.dropped_frames += 1
        self._queue.append(_Queued(k, coeffs, offsets, arrival))
        self._next_out = k + 1

    def drain_frames(self, now: float) -> list[OutFrame]:
        """Every queued frame, oldest first; ``now`` is taken as their send time."""
        fps = self.config.fps
        out = []
        for q in self._queue:
            latency_ms = (now - q.arrival) * 1000.0
            self._latency.add(latency_ms, now)
            out.append(OutFrame(seq=q.seq, t=q.seq / fps, coeffs=q.coeffs, offsets=q.offsets,
                                latency_ms=latency_ms))
        self._queue.clear()
        self.frames_sent += len(out)
        return out

    # ------------------------------------------------------------------ control
    def _identity_at(self, k: int) -> IdentityBlend:
        blend = self.config.identity_blend_frames
        if self._blend_start is None or blend == 0:
            return IdentityBlend(self._id_to, self._id_to, 1.0)
        alpha = min(1.0, max(0.0, (k - self._blend_start + 1) / blend))
        if alpha >= 1.0:
            return IdentityBlend(self._id_to, self._id_to, 1.0)
        return IdentityBlend(self._id_from, self._id_to, alpha)

    def identity_pick_audio(self) -> NDArray[np.float32] | None:
        """For identity "auto": once ``identity_pick_s`` of audio has been heard, that audio
        (returned once); else None. Report the model's choice with :meth:`identity_picked`."""
        want = self.config.identity_pick_samples
        if self._pick_audio is None or self._picking or self._pick_heard < want:
            return None
        self._picking = True
        return np.concatenate(self._pick_audio)

    def identity_picked(self, name: str | None, now: float) -> None:
        """The model's pick for identity "auto" (None: the pick failed; keep the mean). Ignored
        when an explicit identity overtook the pick."""
        if not self._picking:
            return
        self._pick_audio, self._picking = None, False
        if name is not None:
            self._blend_to(name)

    @property
    def auto_identity_pending(self) -> bool:
        """True while identity "auto" has not picked yet."""
        return self._pick_audio is not None

    def set_identity(self, name: str, now: float) -> None:
        """Blend to identity ``name`` from the next requested frame on (cancels "auto")."""
        self._pick_audio, self._picking = None, False
        self._blend_to(name)

    def _blend_to(self, name: str) -> None:
        last = self._identity_at(self._next_frame - 1)
        if last.alpha >= 1.0 and name == self._id_to:
            return
        self._id_from = last.to_identity if last.alpha >= 0.5 else last.from_identity
        self._id_to = name
        self._blend_start = self._next_frame

    @property
    def identity(self) -> str:
        """The identity being blended to (or in use)."""
        return self._id_to

    def interrupt(self, now: float) -> None:
        """Drop buffered audio, ease the face to neutral, reset the model stream."""
        cfg = self.config
        first = self._next_frame
        has_face = self._last_raw is not None or any(i.kind == "model" for i in self._plan)
        ease_end = self._next_out + cfg.interrupt_ease_frames
        resume = max(first, ease_end) if has_face else first
        self._ease = _Ease(self._next_out, cfg.interrupt_ease_frames, self._last_gain, resume)
        if resume > first:
            self._plan.append(_PlanItem("synth", first, resume - first, [now] * (resume - first)))
        # The timeline restarts at s(resume): buffered audio and its arrivals go.
        self._arrivals.clear()
        self._arr_base = resume
        self._next_frame = resume
        self._received = self._consumed = self._sample_of(resume)
        self._buf.clear(self._received)
        self._reset_pending = True
        if self._pick_audio is not None and not self._picking:
            self._pick_audio, self._pick_heard = [], 0  # pick from what is said next
        self._advance(now)

    def end(self, now: float) -> None:
        """No more audio: the resampler's tail is appended, then the remaining audio is
        processed (last hop zero-padded)."""
        if self._ended:
            return
        if self._resampler is not None:
            tail = self._resampler.flush()
            self._resampler = None
            if tail.size:
                self._append(tail, now)
        self._ended = True
        self._advance(now)

    # ------------------------------------------------------------------ state
    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def finished(self) -> bool:
        """True once end() was called and every frame was generated and drained."""
        return (
            self._ended
            and self._next_hop() is None
            and not self._plan
            and not self._queue
        )

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def buffered_samples(self) -> int:
        """Audio held by the session (not yet handed to the model, plus kept look-ahead)."""
        return self._buf.size

    # ------------------------------------------------------------------ pacing (drop policy 1)
    def _fill_ahead(self, seconds: float, now: float) -> None:
        self._ahead_level_s = self.ahead_s(now) + seconds
        self._ahead_at = now

    def ahead_s(self, now: float) -> float:
        """Seconds of audio the sender is ahead of real time: a leaky bucket filled by the
        audio received and drained at real-time rate, never below zero."""
        return max(0.0, self._ahead_level_s - max(0.0, now - self._ahead_at))

    def read_delay_s(self, now: float) -> float:
        """How long the adapter should wait before reading more audio from this client: 0
        while it is at most ``max_ahead_s`` ahead of real time (drop policy 1)."""
        return max(0.0, self.ahead_s(now) - self.config.max_ahead_s)

    @property
    def arrival_log_len(self) -> int:
        return len(self._arrivals)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def stats(self, now: float) -> SessionStats:
        """Counters and latency percentiles for the ``stats`` message."""
        summary = self._latency.summary(now)
        return SessionStats(
            frames_sent=self.frames_sent,
            dropped_frames=self.dropped_frames,
            skipped_hops=self.skipped_hops,
            queue_depth=len(self._queue),
            audio_received_s=self._audio_in / self.config.sample_rate_hz,
            latency_p50_ms=summary.p50_ms,
            latency_p95_ms=summary.p95_ms,
            latency_p99_ms=summary.p99_ms,
        )

