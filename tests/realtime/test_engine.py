"""The inference worker with the tiny random model: batching across streams, order within a
stream, cancellation, failures that stay contained, model calls on the worker; with the model on
the worker thread and in its own process (the same behaviour, and a child that dies comes
back)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from typing import Any

import numpy as np
import pytest

from realtime.engine import EngineConfig, EngineError, HopJob, IdentityMix, InferenceEngine

HOP = 3


def job(stream_id: str, samples: np.ndarray, n_frames: int = HOP, identity: str = "alice",
        final: bool = False) -> HopJob:
    return HopJob(stream_id=stream_id, samples=samples.astype(np.float32),
                  n_frames=n_frames, identity=IdentityMix(identity, identity,
                                                          np.ones(n_frames, np.float32)),
                  final=final)


def speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * rng.uniform(0.2, 1, t.size)).astype(np.float32)


def reference(model: Any, audio: np.ndarray, seed: int, hops: int, identity: str) -> np.ndarray:
    """The same hops run directly on the model, one stream, no engine."""
    state = model.new_stream(seed)
    model.push_audio(state, audio)
    vec = model.identity_vector(identity)
    return np.concatenate([model.stream_step([state], HOP, vec[None])[0] for _ in range(hops)])


@pytest.fixture(params=["thread", "process"])
def engine(request: pytest.FixtureRequest, tiny_model: Any):
    eng = InferenceEngine(tiny_model, EngineConfig(torch_threads=1, worker=request.param))
    yield eng
    eng.stop()


@pytest.fixture
def threaded(tiny_model: Any):
    """The model on the worker thread: for tests that patch the model object in place."""
    eng = InferenceEngine(tiny_model, EngineConfig(torch_threads=1))
    yield eng
    eng.stop()


def pid_and_double(model: Any, x: int) -> tuple[int, int]:
    return os.getpid(), 2 * x


async def test_streams_submitted_together_share_one_batch_and_keep_their_order(engine,
                                                                              tiny_model):
    a, b = speechlike(1.0, 1), speechlike(1.0, 2)
    engine.open_stream("a", seed=11)
    engine.open_stream("b", seed=12)
    # all of a's audio comes with its first hop; its later hops consume none
    futures_a = [engine.submit(job("a", a if i == 0 else a[:0])) for i in range(3)]
    futures_b = [engine.submit(job("b", b, identity="bob"))]
    assert engine.queue_depth == 4
    engine.start()  # the worker finds all four queued
    out_a = await asyncio.gather(*futures_a)
    out_b = await asyncio.gather(*futures_b)
    # one hop per stream per batch: [a0, b0], then [a1], then [a2]
    assert list(engine.batch_sizes) == [2, 1, 1]
    assert engine.jobs_run == 4 and engine.queue_depth == 0
    np.testing.assert_allclose(np.concatenate([r.coeffs for r in out_a]),
                               reference(tiny_model, a, 11, 3, "alice"), atol=1e-5)
    np.testing.assert_allclose(out_b[0].coeffs, reference(tiny_model, b, 12, 1, "bob"), atol=1e-5)


async def test_close_stream_fails_its_pending_hops_only(engine):
    engine.open_stream("a", seed=0)
    engine.open_stream("b", seed=0)
    pending_a = [engine.submit(job("a", speechlike(0.5, 0))) for _ in range(2)]
    pending_b = engine.submit(job("b", speechlike(0.5, 0)))
    engine.close_stream("a")
    assert engine.queue_depth == 1
    for future in pending_a:
        with pytest.raises(EngineError, match="closed"):
            await future
    engine.start()
    assert (await pending_b).coeffs.shape[0] == HOP
    late = engine.submit(job("a", speechlike(0.5, 0)))  # a hop for a closed stream fails alone
    with pytest.raises(EngineError, match="not open"):
        await late


async def test_a_failing_batch_fails_its_jobs_and_the_worker_survives(threaded, tiny_model,
                                                                     monkeypatch):
    engine = threaded
    real_step = tiny_model.stream_step
    calls = {"n": 0}

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "stream_step", fails_once)
    engine.open_stream("a", seed=0)
    engine.open_stream("b", seed=0)
    first = [engine.submit(job(s, speechlike(0.5, 0))) for s in ("a", "b")]
    engine.start()  # both in the first batch, which fails
    for future in first:
        with pytest.raises(EngineError, match="simulated out of memory"):
            await future
    # the worker lives on; a failed stream starts afresh
    again = await engine.submit(job("a", speechlike(0.5, 0)))
    assert again.coeffs.shape == (HOP, tiny_model.config.denoiser.n_coeffs)
    assert again.offsets is None  # not asked for


async def test_a_job_without_enough_audio_fails_alone(engine):
    engine.open_stream("short", seed=0)
    engine.open_stream("fine", seed=0)
    bad = engine.submit(job("short", np.zeros(100, np.float32)))  # audio for no frame at all
    good = engine.submit(job("fine", speechlike(0.5, 3)))
    engine.start()
    with pytest.raises(EngineError, match="audio covers"):
        await bad
    assert (await good).coeffs.shape[0] == HOP


async def test_final_hop_pads_the_look_ahead(engine, tiny_model):
    audio = speechlike(0.2, 4)  # 6 frames of audio
    engine.open_stream("a", seed=3)
    engine.start()
    first = await engine.submit(job("a", audio[:4000]))
    last = await engine.submit(job("a", audio[4000:], final=True))
    offline = tiny_model.generate(audio, identity="alice", seed=3)
    assert offline.shape[0] == 6
    np.testing.assert_allclose(np.concatenate([first.coeffs, last.coeffs]), offline, atol=1e-5)


async def test_call_runs_on_the_worker_thread(threaded):
    engine = threaded
    engine.start()
    worker = await engine.call(lambda model: threading.current_thread().name)
    assert worker == "talker-inference"
    assert await engine.call(lambda model, x: x * 2, 21) == 42

    def broken(model: Any) -> None:
        raise ValueError("boom")

    with pytest.raises(EngineError, match="boom"):
        await engine.call(broken)
    assert await engine.call(lambda model: 7) == 7  # and the worker goes on


async def test_stop_fails_whatever_is_pending(tiny_model):
    eng = InferenceEngine(tiny_model, EngineConfig(torch_threads=1))
    eng.open_stream("a", seed=0)
    future = eng.submit(job("a", speechlike(0.5, 0)))
    eng.stop()
    with pytest.raises(EngineError, match="stopped"):
        await future
    with pytest.raises(EngineError, match="stopped"):
        eng.submit(job("a", speechlike(0.5, 0)))


async def test_vertex_offsets_are_decoded_by_the_worker_for_the_jobs_that_ask(engine, tiny_model):
    engine.open_stream("v", seed=1)
    engine.open_stream("c", seed=2)
    engine.start()
    wants = HopJob(stream_id="v", samples=speechlike(0.5, 0), n_frames=HOP,
                   identity=IdentityMix("alice", "alice", np.ones(HOP, np.float32)),
                   want_offsets=True)
    result, other = await asyncio.gather(engine.submit(wants),
                                         engine.submit(job("c", speechlike(0.5, 1))))
    basis = tiny_model.contract.basis
    assert result.offsets is not None and result.offsets.shape == (HOP, basis.vertex_count, 3)
    np.testing.assert_allclose(basis.template + result.offsets, basis.decode(result.coeffs),
                               atol=1e-5)
    assert other.offsets is None


def test_the_hop_hint_doubles_when_hops_wait_and_halves_when_idle(tiny_model):
    """Busy all the time is not behind (continuous batching at many streams keeps one-frame
    hops); hops waiting past late_s are. It halves when the worker is idle enough or no hop
    waited more than a quarter of late_s (a burst must not leave long hops for good)."""
    engine = InferenceEngine(tiny_model, EngineConfig(max_hint_frames=8, late_s=0.05,
                                                      busy_low=0.3))  # the test's own scale
    hints = []
    for busy, wait in ((1.0, 0.02), (0.9, 0.06), (0.9, 0.2), (1.0, 0.04), (0.95, 0.08),
                       (0.99, 0.3), (1.0, 0.03), (0.7, 0.01), (0.2, 0.03), (0.9, 0.02),
                       (0.5, 0.005), (0.0, 0.0)):
        engine._adjust_hint(busy, wait)
        hints.append(engine.hop_frames_hint)
    assert hints == [1, 2, 4, 4, 8, 8, 8, 4, 2, 2, 1, 1]


async def test_calls_run_in_the_worker_process(engine):
    engine.start()
    pid, doubled = await engine.call(pid_and_double, 21)
    assert doubled == 42 and pid == engine.worker_pid
    assert (pid != os.getpid()) == (engine.config.worker == "process")
    with pytest.raises(EngineError, match="audio must be"):  # the model's own error comes back
        await engine.call(lambda_free_bad_call)
    assert (await engine.call(pid_and_double, 1))[1] == 2  # and the worker goes on


def lambda_free_bad_call(model: Any) -> None:
    model.pick_identity(np.zeros(10, np.float32), 8000)


async def test_a_killed_worker_process_fails_its_batch_and_comes_back(tiny_model):
    engine = InferenceEngine(tiny_model, EngineConfig(torch_threads=1, worker="process"))
    engine.start()
    try:
        engine.open_stream("a", seed=5)
        audio = speechlike(1.0, 7)
        first = await engine.submit(job("a", audio[:8000]))
        dead = engine.worker_pid
        os.kill(dead, signal.SIGKILL)
        await asyncio.sleep(0.2)
        with pytest.raises(EngineError, match="inference failed"):
            await engine.submit(job("a", audio[8000:]))
        assert engine.worker_restarts == 1 and engine.worker_pid not in (dead, os.getpid())
        # the stream starts afresh in the new process: the same as a new stream with its seed
        again = await engine.submit(job("a", audio[:8000]))
        np.testing.assert_allclose(again.coeffs, first.coeffs, atol=1e-5)
    finally:
        engine.stop()
    assert not any(p.name == "talker-inference" for p in multiprocessing.active_children())


def sleep_for(model: Any, seconds: float) -> None:
    import time

    time.sleep(seconds)


async def test_a_hung_worker_process_is_killed_and_replaced(tiny_model):
    engine = InferenceEngine(tiny_model, EngineConfig(torch_threads=1, worker="process",
                                                      answer_timeout_s=0.5))
    engine.start()
    try:
        hung = engine.worker_pid
        with pytest.raises(EngineError, match="no answer within 0.5 s"):
            await engine.call(sleep_for, 30.0)
        assert engine.worker_restarts == 1 and engine.worker_pid != hung
        engine.open_stream("a", seed=1)
        assert (await engine.submit(job("a", speechlike(0.5, 2)))).coeffs.shape[0] == HOP
    finally:
        engine.stop()
