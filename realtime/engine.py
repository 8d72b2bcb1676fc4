"""The inference worker: one thread that owns torch and batches the ready hops of all sessions.

The event loop never runs torch. Adapters submit a :class:`HopJob` per ready hop and await its
future; the worker takes every pending job (at most one per stream, so each stream's hops stay in
order), groups them by hop length and runs one batched ``Talker.stream_step`` per group, which
covers all denoising steps for all sessions in that group. Other model calls (identity picking)
go through :meth:`InferenceEngine.call` and run on the same thread, between batches.

Failures: a job whose stream cannot take it (closed, or not enough audio) fails alone; a forward
pass that raises fails the jobs of its group. Their futures get :class:`EngineError`; the worker
goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models.errors import InternalError
from models.net.contract import ModelContract
from realtime.session import MEAN_IDENTITY

log = logging.getLogger(__name__)

class StreamingModel(Protocol):
    """The part of ``models.net.talker.Talker`` that the engine and the server use."""

    @property
    def contract(self) -> ModelContract: ...
    @property
    def identities(self) -> list[str]: ...
    def new_stream(self, seed: int) -> Any: ...
    def push_audio(self, state: Any, samples: np.ndarray) -> None: ...
    def flush(self, state: Any) -> None: ...
    def frames_available(self, state: Any) -> int: ...
    def stream_step(
        self, states: list[Any], n_frames: int, identity_vectors: Any
    ) -> np.ndarray: ...
    def identity_vector(self, identity: str | None, audio: np.ndarray | None = None) -> Any: ...


@dataclass(frozen=True)
class EngineConfig:
    # Intra-op threads of the one inference worker. 1 leaves the other core to the event loop
    # (sockets, msgpack, WebRTC decoding); on a shared or loaded 2-core machine more threads than
    # free cores make torch spin and run many times slower. 0 = all cores.
    torch_threads: int = 1
    # NumPy's BLAS (OpenBLAS) threads, process-wide: the event loop decodes vertices with a small
    # matmul per drain, and OpenBLAS worker threads busy-wait after each call. With its default
    # (all cores) one such thread burnt a whole core at a single stream (measured: 115 % server
    # CPU at RTF 0.14). 0 = leave BLAS alone.
    blas_threads: int = 1
    max_batch: int = 64  # streams per forward; more waits for the next round
    # Hop size the worker suggests (``hop_frames_hint``): doubled while the worker is busier
    # than `busy_high` of the time over a `hint_window_s`, halved below `busy_low`, at most
    # `max_hint_frames`. A model call has a large fixed cost (8 steps; ~8 ms at 1 frame, ~10 at
    # 3), so under load fewer, larger hops of one size keep up; unloaded, one-frame hops keep
    # the latency low.
    max_hint_frames: int = 4
    hint_window_s: float = 0.5
    busy_high: float = 0.85
    busy_low: float = 0.4
    max_wait_s: float = 0.0  # extra wait to gather a bigger batch; 0 = run as soon as work exists


@dataclass
class IdentityMix:
    """Per-frame identity: embedding of ``source`` blended towards ``target`` by ``alpha``."""

    source: str | None
    target: str | None
    alpha: np.ndarray  # (n_frames,) in [0, 1]


@dataclass(frozen=True)
class HopResult:
    """What a hop produced: coefficients, and vertex offsets from the template when asked
    (``vertices = template + offsets``), decoded here, in one matmul per worker batch."""

    coeffs: np.ndarray  # (n_frames, K) float32
    offsets: np.ndarray | None  # (n_frames, V, 3) float32, or None


@dataclass
class HopJob:
    stream_id: str
    samples: np.ndarray  # new audio (at the model's rate) the model consumes for this hop
    n_frames: int
    identity: IdentityMix
    reset: bool = False  # start the model stream afresh (interrupt)
    final: bool = False  # end of audio: pad look-ahead with silence
    want_offsets: bool = False  # also decode vertex offsets (a client wants vertex frames)
    future: asyncio.Future[HopResult] | None = None
    loop: asyncio.AbstractEventLoop | None = None


class EngineError(InternalError):
    """A hop or call could not run: engine stopped, stream closed, or the model raised."""


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class InferenceEngine:
    def __init__(self, model: StreamingModel, config: EngineConfig = EngineConfig()) -> None:
        self.model = model
        self.config = config
        basis = model.contract.basis
        self._vectors = np.ascontiguousarray(basis.vectors.reshape(basis.size, -1), np.float32)
        self._streams: dict[str, Any] = {}
        self._seeds: dict[str, int] = {}
        self._flushed: set[str] = set()  # streams whose audio has ended (look-ahead padded)
        self._pending: deque[HopJob] = deque()
        self._calls: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._hint = 1  # frames a session gathers before a hop (hop_frames_hint)
        self._window_start = time.monotonic()
        self._window_busy = 0.0
        self.batches_run = 0
        self.jobs_run = 0
        self.busy_s = 0.0
        self.batch_sizes: deque[int] = deque(maxlen=256)

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        if self.config.blas_threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=self.config.blas_threads, user_api="blas")
        self._thread = threading.Thread(target=self._run, name="talker-inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._cond:
            jobs, calls = list(self._pending), list(self._calls)
            self._pending.clear()
            self._calls.clear()
        for job in jobs:
            _resolve(job, exc=EngineError("engine stopped"))
        for call in calls:
            _settle(call.loop, call.future, exc=EngineError("engine stopped"))

    # ------------------------------------------------------------------------------- streams
    def open_stream(self, stream_id: str, seed: int) -> None:
        with self._cond:
            self._seeds[stream_id] = seed
            self._streams.pop(stream_id, None)

    def close_stream(self, stream_id: str) -> None:
        """Forget the stream; its pending hops fail with EngineError. A hop already running
        completes, but its state is not kept."""
        with self._cond:
            self._seeds.pop(stream_id, None)
            self._streams.pop(stream_id, None)
            self._flushed.discard(stream_id)
            for job in [j for j in self._pending if j.stream_id == stream_id]:
                self._pending.remove(job)
                _resolve(job, exc=EngineError("stream closed"))

    @property
    def hop_frames_hint(self) -> int:
        """Frames a session should gather before its next hop (see ``EngineConfig``): 1 when
        the worker has time to spare, more under load."""
        return self._hint

    def _adjust_hint(self, busy_fraction: float) -> None:
        cfg = self.config
        if busy_fraction > cfg.busy_high:
            self._hint = min(2 * self._hint, cfg.max_hint_frames)
        elif busy_fraction < cfg.busy_low:
            self._hint = max(1, self._hint // 2)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def submit(self, job: HopJob) -> asyncio.Future[HopResult]:
        """Queue a hop; the returned future resolves to its :class:`HopResult`."""
        loop = asyncio.get_running_loop()
        job.loop = loop
        job.future = loop.create_future()
        with self._cond:
            if self._stopping:
                raise EngineError("engine stopped")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(model, *args)`` on the worker thread, between batches (e.g. identity
        picking), so that torch never runs on two threads at once. Exceptions propagate as
        EngineError."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            if self._stopping:
                raise EngineError("engine stopped")
            self._calls.append(_Call(fn, args, future, loop))
            self._cond.notify()
        return await future

    # -------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        import torch

        threads = self.config.torch_threads or (os.cpu_count() or 1)
        torch.set_num_threads(threads)
        with torch.inference_mode():
            while True:
                batch = self._take_batch()
                if batch is None:
                    return
                started = time.monotonic()
                self._run_calls()
                if batch:
                    # counted before any future resolves: an awaiting caller sees its batch
                    self.batches_run += 1
                    self.jobs_run += len(batch)
                    self.batch_sizes.append(len(batch))
                    self._run_batch(batch)
                ended = time.monotonic()
                self.busy_s += ended - started
                self._window_busy += ended - started
                if ended - self._window_start >= self.config.hint_window_s:
                    self._adjust_hint(self._window_busy / (ended - self._window_start))
                    self._window_start, self._window_busy = ended, 0.0

    def _take_batch(self) -> list[HopJob] | None:
        with self._cond:
            while not self._pending and not self._calls and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            if not self._pending:
                return []  # only calls to run
        if self.config.max_wait_s > 0:
            time.sleep(self.config.max_wait_s)
        with self._cond:
            batch: list[HopJob] = []
            seen: set[str] = set()
            rest: deque[HopJob] = deque()
            while self._pending:
                job = self._pending.popleft()
                if job.stream_id in seen or len(batch) >= self.config.max_batch:
                    rest.append(job)  # keeps this stream's later hops in order for next round
                else:
                    seen.add(job.stream_id)
                    batch.append(job)
            self._pending = rest
            return batch

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = list(self._calls), deque()
        for call in calls:
            try:
                result = call.fn(self.model, *call.args)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                _settle(call.loop, call.future, exc=EngineError(f"model call failed: {exc}"))
            else:
                _settle(call.loop, call.future, result=result)

    def _run_batch(self, batch: list[HopJob]) -> None:
        groups: dict[int, list[tuple[HopJob, Any]]] = {}
        for job in batch:
            try:
                state = self._prepare(job)
            except Exception as exc:  # noqa: BLE001 - this job fails alone
                _resolve(job, exc=exc if isinstance(exc, EngineError) else
                         EngineError(f"stream {job.stream_id}: {exc}"))
                continue
            groups.setdefault(job.n_frames, []).append((job, state))
        for n_frames, prepared in groups.items():
            jobs = [job for job, _ in prepared]
            try:
                identities = self._identity_batch(jobs, n_frames)
                coeffs = self.model.stream_step([s for _, s in prepared], n_frames, identities)
            except Exception as exc:  # noqa: BLE001 - a bad batch must not kill the worker
                log.exception("inference batch failed")
                for job in jobs:
                    _resolve(job, exc=EngineError(f"inference failed: {exc}"))
                    self._forget(job.stream_id)  # its model state may be half advanced
                continue
            coeffs = np.asarray(coeffs, dtype=np.float32)  # (B, n, K)
            offsets = self._offsets(coeffs, [job.want_offsets for job in jobs])
            for i, job in enumerate(jobs):
                _resolve(job, result=HopResult(coeffs[i], offsets.get(i)))

    def _offsets(self, coeffs: np.ndarray, wanted: list[bool]) -> dict[int, np.ndarray]:
        """Vertex offsets (n, V, 3) of the rows that want them: one matmul for all of them."""
        rows = [i for i, want in enumerate(wanted) if want]
        if not rows:
            return {}
        vectors = self._vectors  # (K, V*3)
        B, n, K = len(rows), coeffs.shape[1], coeffs.shape[2]
        flat = coeffs[rows].reshape(B * n, K) @ vectors  # (B*n, V*3)
        out = flat.reshape(B, n, -1, 3)
        return {row: out[b] for b, row in enumerate(rows)}

    def _forget(self, stream_id: str) -> None:
        with self._cond:
            self._streams.pop(stream_id, None)
            self._flushed.discard(stream_id)

    def _prepare(self, job: HopJob) -> Any:
        with self._cond:
            if job.stream_id not in self._seeds:
                raise EngineError(f"stream {job.stream_id} is not open")
            state = self._streams.get(job.stream_id)
            if state is None or job.reset:
                state = self.model.new_stream(self._seeds[job.stream_id])
                self._streams[job.stream_id] = state
                self._flushed.discard(job.stream_id)
            flushed = job.stream_id in self._flushed
            if job.final:
                self._flushed.add(job.stream_id)
        if job.samples.size and not flushed:
            self.model.push_audio(state, job.samples)
        if job.final and not flushed:
            self.model.flush(state)
        available = self.model.frames_available(state)
        if available < job.n_frames:
            raise EngineError(
                f"stream {job.stream_id}: hop needs {job.n_frames} frames, audio covers {available}"
            )
        return state

    def _identity_batch(self, jobs: list[HopJob], n_frames: int) -> Any:
        import torch

        rows = []
        for job in jobs:
            mix = job.identity
            src = self.model.identity_vector(_name(mix.source))
            dst = self.model.identity_vector(_name(mix.target))
            alpha = torch.as_tensor(mix.alpha, dtype=src.dtype).reshape(n_frames, 1)
            rows.append(src.reshape(1, -1) * (1 - alpha) + dst.reshape(1, -1) * alpha)
        return torch.stack(rows)  # (B, n_frames, D)


def _name(identity: str | None) -> str | None:
    return None if identity in (None, MEAN_IDENTITY) else identity


def _resolve(
    job: HopJob, result: HopResult | None = None, exc: BaseException | None = None
) -> None:
    if job.future is not None and job.loop is not None:
        _settle(job.loop, job.future, result, exc)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any = None,
    exc: BaseException | None = None,
) -> None:
    """Complete ``future`` from the worker thread (a no-op once it is done or cancelled)."""

    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # loop closed: nobody is waiting any more
        pass
