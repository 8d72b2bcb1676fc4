"""The inference worker: one thread that owns torch and batches the ready hops of all sessions.

The event loop never runs torch. Adapters submit a :class:`HopJob` per ready hop and await its
future; the worker takes every pending job (at most one per stream, so each stream's hops stay in
order), groups them by hop length and runs one batched ``Talker.stream_step`` per group, which
covers all denoising steps for all sessions in that group. Other model calls (identity picking)
go through :meth:`InferenceEngine.call` and run on the same worker, between batches.

Where the model runs (``EngineConfig.worker``):
- ``"thread"``: in this process, on the worker thread. The thread shares the interpreter lock
  with the event loop: every torch op hands it over, and under load the loop can keep it for a
  whole switch interval (5 ms) each time.
- ``"process"``: in a child process (spawned, so no torch or asyncio state is inherited) that
  owns the model and every stream's state; the worker thread here sends it each batch over a
  pipe (new audio, seeds, identities) and gets the coefficients back. The event loop and torch
  then run on two cores without a shared lock. If the child dies, the batch in flight fails,
  the child is started again and its streams start afresh (as after any failed batch).
Vertex offsets are decoded here either way, one matmul per batch group.

Failures: a job whose stream cannot take it (closed, or not enough audio) fails alone; a forward
pass that raises fails the jobs of its group. Their futures get :class:`EngineError`; the worker
goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal, Protocol

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
    # Hop size the worker suggests (``hop_frames_hint``), judged over each `hint_window_s`:
    # doubled (at most `max_hint_frames`) when some hop waited in the queue longer than
    # `late_s` (the worker is falling behind), halved when the worker was busy less than
    # `busy_low` of the time or no hop waited more than a quarter of `late_s` (so that one
    # burst does not leave a moderately busy worker at long hops for good). A model call has a
    # large fixed cost (8 steps), so under real overload fewer, larger hops keep up; but a
    # worker that is busy all the time with small batches (continuous batching at many
    # streams) is not behind, and keeps one-frame hops and their latency.
    max_hint_frames: int = 4
    hint_window_s: float = 0.5
    late_s: float = 0.1  # 3 frames at 30 fps
    busy_low: float = 0.4
    max_wait_s: float = 0.0  # extra wait to gather a bigger batch; 0 = run as soon as work exists
    # Where torch runs (module docstring): "process" keeps the event loop and inference from
    # sharing one interpreter lock; "thread" starts instantly (tests, tools).
    worker: Literal["thread", "process"] = "thread"
    start_timeout_s: float = 120.0  # the child process: imports, model unpickling
    answer_timeout_s: float = 30.0  # a batch or call the child has not answered: killed, restarted


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
    submitted_s: float = 0.0  # time.monotonic() at submit: how long it waited for the worker
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
        if config.worker not in ("thread", "process"):
            raise ValueError(f"EngineConfig.worker must be 'thread' or 'process', "
                             f"got {config.worker!r}")
        self.model = model
        self.config = config
        basis = model.contract.basis
        self._vectors = np.ascontiguousarray(basis.vectors.reshape(basis.size, -1), np.float32)
        self._seeds: dict[str, int] = {}  # open streams
        self._dropped: set[str] = set()  # closed since the last batch: the worker forgets them
        self._pending: deque[HopJob] = deque()
        self._calls: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._worker: _ModelWorker | _ProcessWorker | None = None
        self._stopping = False
        self._hint = 1  # frames a session gathers before a hop (hop_frames_hint)
        self._window_start = time.monotonic()
        self._window_busy = 0.0
        self._window_wait = 0.0  # the longest a hop waited for its batch in this window
        self.batches_run = 0
        self.jobs_run = 0
        self.busy_s = 0.0
        self.worker_restarts = 0  # child processes started again after dying
        self.batch_sizes: deque[int] = deque(maxlen=256)

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker thread (and, for ``worker="process"``, the child process, which
        this waits for: EngineError if it does not come up)."""
        if self._thread is not None:
            return
        if self.config.blas_threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=self.config.blas_threads, user_api="blas")
        if self.config.worker == "process":
            self._worker = _ProcessWorker(self.model, self.config)
        else:
            self._worker = _ModelWorker(self.model)
        self._thread = threading.Thread(target=self._run, name="talker-inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if isinstance(self._worker, _ProcessWorker):
            self._worker.close()
        with self._cond:
            jobs, calls = list(self._pending), list(self._calls)
            self._pending.clear()
            self._calls.clear()
        for job in jobs:
            _resolve(job, exc=EngineError("engine stopped"))
        for call in calls:
            _settle(call.loop, call.future, exc=EngineError("engine stopped"))

    @property
    def worker_pid(self) -> int:
        """The process the model runs in (this one for ``worker="thread"``)."""
        if isinstance(self._worker, _ProcessWorker):
            return self._worker.pid
        return os.getpid()

    # ------------------------------------------------------------------------------- streams
    def open_stream(self, stream_id: str, seed: int) -> None:
        with self._cond:
            self._seeds[stream_id] = seed
            self._dropped.add(stream_id)  # a reused id starts afresh

    def close_stream(self, stream_id: str) -> None:
        """Forget the stream; its pending hops fail with EngineError. A hop already running
        completes, but its state is not kept."""
        with self._cond:
            self._seeds.pop(stream_id, None)
            self._dropped.add(stream_id)
            for job in [j for j in self._pending if j.stream_id == stream_id]:
                self._pending.remove(job)
                _resolve(job, exc=EngineError("stream closed"))

    @property
    def hop_frames_hint(self) -> int:
        """Frames a session should gather before its next hop (see ``EngineConfig``): 1 when
        the worker has time to spare, more under load."""
        return self._hint

    def _adjust_hint(self, busy_fraction: float, max_wait_s: float) -> None:
        cfg = self.config
        if max_wait_s > cfg.late_s:
            self._hint = min(2 * self._hint, cfg.max_hint_frames)
        elif busy_fraction < cfg.busy_low or max_wait_s < cfg.late_s / 4:
            self._hint = max(1, self._hint // 2)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def submit(self, job: HopJob) -> asyncio.Future[HopResult]:
        """Queue a hop; the returned future resolves to its :class:`HopResult`."""
        loop = asyncio.get_running_loop()
        job.loop = loop
        job.future = loop.create_future()
        job.submitted_s = time.monotonic()
        with self._cond:
            if self._stopping:
                raise EngineError("engine stopped")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(model, *args)`` on the worker, between batches (e.g. identity picking), so
        that torch never runs on two threads at once. With ``worker="process"`` it runs in the
        child: ``fn`` must then be a module-level function. Exceptions propagate as
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
                    waited = started - min(job.submitted_s for job in batch)
                    self._window_wait = max(self._window_wait, waited)
                    # counted before any future resolves: an awaiting caller sees its batch
                    self.batches_run += 1
                    self.jobs_run += len(batch)
                    self.batch_sizes.append(len(batch))
                    self._run_batch(batch)
                ended = time.monotonic()
                self.busy_s += ended - started
                self._window_busy += ended - started
                if ended - self._window_start >= self.config.hint_window_s:
                    self._adjust_hint(self._window_busy / (ended - self._window_start),
                                      self._window_wait)
                    self._window_start, self._window_busy = ended, 0.0
                    self._window_wait = 0.0

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
        assert self._worker is not None
        for call in calls:
            try:
                result = self._worker.call(call.fn, call.args)
            except _WorkerDied as exc:
                self._restart(exc)
                _settle(call.loop, call.future, exc=EngineError(f"model call failed: {exc}"))
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                _settle(call.loop, call.future, exc=EngineError(f"model call failed: {exc}"))
            else:
                _settle(call.loop, call.future, result=result)

    def _run_batch(self, batch: list[HopJob]) -> None:
        jobs: list[HopJob] = []
        specs: list[_JobSpec] = []
        with self._cond:
            dropped, self._dropped = self._dropped, set()
            for job in batch:
                seed = self._seeds.get(job.stream_id)
                if seed is None:
                    _resolve(job, exc=EngineError(f"stream {job.stream_id} is not open"))
                    continue
                jobs.append(job)
                specs.append(_JobSpec(job.stream_id, seed, job.samples, job.n_frames,
                                      job.identity, job.reset, job.final))
        assert self._worker is not None
        try:
            outcomes = self._worker.run(dropped, specs)
        except _WorkerDied as exc:
            self._restart(exc)
            outcomes = [f"inference failed: {exc}"] * len(jobs)
        done: dict[int, list[int]] = {}  # n_frames -> rows that succeeded
        settled: list[tuple[HopJob, HopResult | None, BaseException | None]] = []
        for i, (job, outcome) in enumerate(zip(jobs, outcomes, strict=True)):
            if isinstance(outcome, str):
                settled.append((job, None, EngineError(outcome)))
            else:
                done.setdefault(job.n_frames, []).append(i)
        for rows in done.values():
            coeffs = np.stack([np.asarray(outcomes[i], np.float32) for i in rows])  # (B, n, K)
            offsets = self._offsets(coeffs, [jobs[i].want_offsets for i in rows])
            settled += [(jobs[i], HopResult(coeffs[b], offsets.get(b)), None)
                        for b, i in enumerate(rows)]
        _resolve_all(settled)

    def _restart(self, exc: BaseException) -> None:
        """The child process died: start a new one; every stream starts afresh there."""
        log.error("inference process died (%s); starting a new one", exc)
        assert isinstance(self._worker, _ProcessWorker)
        self._worker.close()
        self.worker_restarts += 1
        try:
            self._worker = _ProcessWorker(self.model, self.config)
        except EngineError:
            log.exception("the inference process did not come back; retrying on the next batch")

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


@dataclass(frozen=True)
class _JobSpec:
    """What the model side needs of a hop (picklable: it crosses to the child process)."""

    stream_id: str
    seed: int
    samples: np.ndarray
    n_frames: int
    identity: IdentityMix
    reset: bool
    final: bool


class _WorkerDied(Exception):
    """The child process is gone (pipe closed, killed, crashed)."""


class _ModelWorker:
    """The model side: every stream's model state; runs batches and calls. Lives on the worker
    thread (``worker="thread"``) or in the child process."""

    def __init__(self, model: StreamingModel) -> None:
        self.model = model
        self._states: dict[str, Any] = {}
        self._flushed: set[str] = set()  # streams whose audio has ended (look-ahead padded)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(self.model, *args)

    def run(self, dropped: set[str], specs: list[_JobSpec]) -> list[np.ndarray | str]:
        """Each spec's (n_frames, K) coefficients, or the message of its failure."""
        for stream_id in dropped:
            self._forget(stream_id)
        out: list[np.ndarray | str] = [""] * len(specs)
        groups: dict[int, list[tuple[int, Any]]] = {}
        for i, spec in enumerate(specs):
            try:
                state = self._prepare(spec)
            except Exception as exc:  # noqa: BLE001 - this job fails alone
                out[i] = f"stream {spec.stream_id}: {exc}"
                continue
            groups.setdefault(spec.n_frames, []).append((i, state))
        for n_frames, prepared in groups.items():
            rows = [i for i, _ in prepared]
            try:
                identities = self._identity_batch([specs[i].identity for i in rows], n_frames)
                coeffs = self.model.stream_step([s for _, s in prepared], n_frames, identities)
            except Exception as exc:  # noqa: BLE001 - a bad batch must not kill the worker
                log.exception("inference batch failed")
                for i in rows:
                    out[i] = f"inference failed: {exc}"
                    self._forget(specs[i].stream_id)  # its model state may be half advanced
                continue
            coeffs = np.asarray(coeffs, dtype=np.float32)  # (B, n, K)
            for b, i in enumerate(rows):
                out[i] = coeffs[b]
        return out

    def _forget(self, stream_id: str) -> None:
        self._states.pop(stream_id, None)
        self._flushed.discard(stream_id)

    def _prepare(self, spec: _JobSpec) -> Any:
        state = self._states.get(spec.stream_id)
        if state is None or spec.reset:
            state = self.model.new_stream(spec.seed)
            self._states[spec.stream_id] = state
            self._flushed.discard(spec.stream_id)
        flushed = spec.stream_id in self._flushed
        if spec.final:
            self._flushed.add(spec.stream_id)
        if spec.samples.size and not flushed:
            self.model.push_audio(state, spec.samples)
        if spec.final and not flushed:
            self.model.flush(state)
        available = self.model.frames_available(state)
        if available < spec.n_frames:
            raise EngineError(f"hop needs {spec.n_frames} frames, audio covers {available}")
        return state

    def _identity_batch(self, mixes: list[IdentityMix], n_frames: int) -> Any:
        import torch

        vectors: dict[str | None, Any] = {}  # one lookup per identity in the batch

        def vector(identity: str | None) -> Any:
            name = _name(identity)
            if name not in vectors:
                vectors[name] = self.model.identity_vector(name).reshape(1, -1)
            return vectors[name]

        rows = []
        for mix in mixes:
            src, dst = vector(mix.source), vector(mix.target)
            if _name(mix.source) == _name(mix.target):  # no blend in progress
                rows.append(src.expand(n_frames, -1))
                continue
            alpha = torch.as_tensor(mix.alpha, dtype=src.dtype).reshape(n_frames, 1)
            rows.append(src * (1 - alpha) + dst * alpha)
        return torch.stack(rows)  # (B, n_frames, D)


class _ProcessWorker:
    """A child process running a :class:`_ModelWorker`; the same ``run`` and ``call``, over a
    pipe. One request at a time (the worker thread is its only user)."""

    def __init__(self, model: StreamingModel, config: EngineConfig) -> None:
        self._answer_timeout_s = config.answer_timeout_s
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_child_main, name="talker-inference",
                                    args=(child, model, config.torch_threads,
                                          config.blas_threads), daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(config.start_timeout_s):
            self.close()
            raise EngineError(f"the inference process did not start within "
                              f"{config.start_timeout_s:g} s")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise EngineError(f"the inference process failed to start: {exc}") from None
        if kind != "ready":
            self.close()
            raise EngineError(f"the inference process failed to start: {payload}")

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def run(self, dropped: set[str], specs: list[_JobSpec]) -> list[np.ndarray | str]:
        result: list[np.ndarray | str] = self._request(("run", dropped, specs))
        return result

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return self._request(("call", fn, args))

    def _request(self, message: tuple[Any, ...]) -> Any:
        try:
            self._conn.send(message)
            if not self._conn.poll(self._answer_timeout_s):
                self._process.kill()  # hung: the caller starts a new one
                raise _WorkerDied(f"no answer within {self._answer_timeout_s:g} s")
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode
            raise _WorkerDied(f"exit code {code}" if code is not None else str(exc)) from None
        if kind == "error":
            raise EngineError(payload)
        return payload

    def close(self) -> None:
        try:
            self._conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._conn.close()


def _child_main(conn: Connection, model: StreamingModel, torch_threads: int,
                blas_threads: int) -> None:
    """The child process: serve ``run`` and ``call`` requests until ``stop`` or the pipe
    closes. Exceptions of a call go back as ("error", message); nothing ends the loop but the
    parent."""
    import signal

    import torch

    # Ctrl-C reaches the whole process group: the parent shuts this process down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(torch_threads or (os.cpu_count() or 1))
    if blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads, user_api="blas")
    worker = _ModelWorker(model)
    conn.send(("ready", os.getpid()))
    with torch.inference_mode():
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "stop":
                return
            try:
                if message[0] == "run":
                    reply: tuple[str, Any] = ("ok", worker.run(message[1], message[2]))
                else:
                    reply = ("ok", worker.call(message[1], message[2]))
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                reply = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)


def _name(identity: str | None) -> str | None:
    return None if identity in (None, MEAN_IDENTITY) else identity


def _resolve(
    job: HopJob, result: HopResult | None = None, exc: BaseException | None = None
) -> None:
    if job.future is not None and job.loop is not None:
        _settle(job.loop, job.future, result, exc)


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]  # future, result, exception


def _resolve_all(settled: list[tuple[HopJob, HopResult | None, BaseException | None]]) -> None:
    """Complete a batch's futures with one wake-up of each event loop (not one per job: each
    wake-up is a write to the loop's self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for job, result, exc in settled:
        if job.future is not None and job.loop is not None:
            by_loop.setdefault(job.loop, []).append((job.future, result, exc))
    for loop, items in by_loop.items():
        _wake(loop, items)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any = None,
    exc: BaseException | None = None,
) -> None:
    """Complete ``future`` from the worker thread (a no-op once it is done or cancelled)."""
    _wake(loop, [(future, result, exc)])


def _wake(loop: asyncio.AbstractEventLoop, items: list[_Outcome]) -> None:
    """On ``loop``'s thread, give each future its result or exception (skipping any that is
    done or cancelled by then)."""

    def complete() -> None:
        for future, result, exc in items:
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    try:
        loop.call_soon_threadsafe(complete)
    except RuntimeError:  # loop closed: nobody is waiting any more
        pass
