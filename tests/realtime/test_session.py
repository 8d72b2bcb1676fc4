"""Session core: exact timing, hop contract, latency, bounds, drops, interrupt and identity."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.messages import Stats, encode
from realtime.session import HopRequest, OutFrame, Session, SessionConfig

SR = 16000
K = 2  # coefficient count of the fake model


def config(**policy) -> SessionConfig:
    """A session config as a 16 kHz / 30 fps model's contract dictates, plus ``policy``; hops
    of exactly 3 frames unless the test says otherwise (the exact timelines below use them)."""
    fields = {"fps": 30, "sample_rate_hz": SR, "lookahead_s": 0.1, "identity_pick_s": 3.0,
              "hop_frames": 3, "max_hop_frames": 3}
    return SessionConfig(**{**fields, **policy})


def s_of(k: int, fps: int = 30) -> int:
    return k * SR // fps


def fake_coeffs(req: HopRequest) -> np.ndarray:
    """Coefficients that identify their frame: [frame index, 1]."""
    frames = np.arange(req.frame_start, req.frame_start + req.n_frames, dtype=np.float32)
    return np.stack([frames, np.ones_like(frames)], axis=1)


def pump(session: Session, now: float, log: list[HopRequest] | None = None) -> list[OutFrame]:
    """One worker turn with an instant model, then a drain."""
    while reqs := session.ready_hops(now):
        for req in reqs:
            if log is not None:
                log.append(req)
            session.complete_hop(req.request_id, fake_coeffs(req), now)
    return session.drain_frames(now)


def stream(audio: np.ndarray, chunk: int, session: Session, realtime: bool = True,
           log: list[HopRequest] | None = None) -> list[OutFrame]:
    frames: list[OutFrame] = []
    now = 0.0
    for i in range(0, audio.size, chunk):
        piece = audio[i : i + chunk]
        now = (i + piece.size) / SR if realtime else 0.0
        session.feed_audio(piece, now)
        frames += pump(session, now, log)
    session.end(now)
    frames += pump(session, now, log)
    return frames


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    n = round(seconds * SR)
    return np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)


# ------------------------------------------------------------------ counts and timing


@pytest.mark.parametrize("seconds", [0.0, 0.05, 0.37, 1.0, 2.5, 3.01])
def test_frame_count_seq_and_t(seconds: float) -> None:
    session = Session(config(), "a")
    frames = stream(noise(seconds), 320, session)
    assert len(frames) == math.ceil(round(seconds * SR) * 30 / SR)
    assert abs(len(frames) - round(seconds * 30)) <= 3
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(f.t == f.seq / 30 for f in frames)
    assert [f.coeffs[0] for f in frames] == [float(f.seq) for f in frames]
    assert session.finished and session.dropped_frames == 0


def test_hop_ready_exactly_when_lookahead_arrived() -> None:
    session = Session(config(lookahead_s=0.1), "a")
    need0 = s_of(2) + 1600 + 1  # last frame's sample + look-ahead, inclusive
    session.feed_audio(np.zeros(need0 - 1, np.float32), 0.0)
    assert session.ready_hops(0.0) == []
    session.feed_audio(np.zeros(1, np.float32), 0.1)
    (req,) = session.ready_hops(0.1)
    assert (req.frame_start, req.n_frames, req.sample_start) == (0, 3, 0)
    assert req.samples.size == need0 and req.reset_state and req.padding_samples == 0
    session.feed_audio(np.zeros(1599, np.float32), 0.2)
    assert session.ready_hops(0.2) == []  # one request in flight at most
    session.complete_hop(req.request_id, fake_coeffs(req), 0.2)
    assert session.ready_hops(0.2) == []
    session.feed_audio(np.zeros(1, np.float32), 0.3)
    (req2,) = session.ready_hops(0.3)
    assert (req2.frame_start, req2.sample_start, req2.samples.size) == (3, need0, 1600)
    assert not req2.reset_state


def test_end_pads_last_partial_hop() -> None:
    session = Session(config(), "a")
    log: list[HopRequest] = []
    stream(noise(0.25), 4000, session, log=log)  # 4000 samples -> ceil(7.5) = 8 frames
    last = log[-1]
    assert (last.frame_start, last.n_frames) == (6, 2)
    need = s_of(7) + 1600 + 1
    assert last.sample_start + last.samples.size == need
    # the look-ahead of the last two hops lies past the end: both are padded with zeros
    assert [r.padding_samples for r in log] == [0, s_of(5) + 1601 - 4000, need - s_of(5) - 1601]
    assert not last.samples.any()


def test_end_without_audio_finishes_at_once() -> None:
    session = Session(config(), "a")
    session.end(0.0)
    assert session.ready_hops(0.0) == [] and session.finished
    with pytest.raises(ValueError):
        session.feed_audio(np.zeros(10, np.float32), 0.1)


@pytest.mark.parametrize("lookahead_s", [0.0, 0.1, 0.35])
def test_chunk_invariance_of_hop_samples(lookahead_s: float) -> None:
    audio = noise(2.3, seed=1)
    results = []
    for chunk in (160, 16000, 777):
        log: list[HopRequest] = []
        session = Session(config(lookahead_s=lookahead_s, stale_window_s=math.inf), "a")
        stream(audio, chunk, session, log=log)
        results.append(log)
    ref = results[0]
    handed = np.concatenate([r.samples for r in ref])
    padding = sum(r.padding_samples for r in ref)
    # everything up to the last frame's sample + look-ahead, once, in order, zero-padded
    n_frames = math.ceil(audio.size * 30 / SR)
    assert handed.size == s_of(n_frames - 1) + round(lookahead_s * SR) + 1
    padded = np.concatenate([audio, np.zeros(padding, np.float32)])
    np.testing.assert_array_equal(handed, padded[: handed.size])
    starts = np.cumsum([0] + [r.samples.size for r in ref])[:-1]
    assert [r.sample_start for r in ref] == list(starts)
    for log in results[1:]:
        assert [(r.frame_start, r.n_frames) for r in log] == [
            (r.frame_start, r.n_frames) for r in ref]
        np.testing.assert_array_equal(np.concatenate([r.samples for r in log]), handed)


# ------------------------------------------------------------------ latency


def test_latency_exact_for_scripted_arrivals() -> None:
    """Audio arrives in 100 ms chunks at the end of each chunk; frames are sent 5 ms later."""
    session = Session(config(lookahead_s=0.1), "a")
    frames: list[tuple[OutFrame, float]] = []
    for i in range(20):
        arrive = 0.1 * (i + 1)
        session.feed_audio(np.zeros(1600, np.float32), arrive)
        for req in session.ready_hops(arrive):
            session.complete_hop(req.request_id, fake_coeffs(req), arrive + 0.003)
        frames += [(f, arrive + 0.005) for f in session.drain_frames(arrive + 0.005)]
    assert [f.seq for f, _ in frames] == list(range(len(frames)))
    for frame, sent_at in frames:
        arrived = 0.1 * (s_of(frame.seq) // 1600 + 1)
        assert frame.latency_ms == pytest.approx((sent_at - arrived) * 1000, abs=1e-9)
    # 100 ms chunks, 100 ms look-ahead: hop 0 (sample 0 came at 0.1 s) goes out at 0.205 s
    assert frames[0][0].latency_ms == pytest.approx(105.0)
    stats = session.stats(2.005)
    assert stats["frames_sent"] == len(frames)
    assert stats["latency_p50_ms"] == pytest.approx(
        float(np.percentile([f.latency_ms for f, _ in frames], 50)))
    assert stats["audio_received_s"] == pytest.approx(2.0)
    encode(Stats(**stats))  # the dict is exactly the stats message


# ------------------------------------------------------------------ bounds and drops


def test_queue_bounded_for_a_client_that_never_reads() -> None:
    cfg = config(max_pending_frames=10)
    session = Session(cfg, "a")
    generated = 0
    for i in range(50):  # 5 s in 100 ms chunks
        now = 0.1 * (i + 1)
        session.feed_audio(np.zeros(1600, np.float32), now)
        for req in session.ready_hops(now):
            session.complete_hop(req.request_id, fake_coeffs(req), now)
            generated += req.n_frames
        assert session.queue_depth <= 10
        assert session.arrival_log_len <= 10  # frames covered by buffered audio only
        assert session.buffered_samples <= 1600 + 1600 + 534
    assert session.dropped_frames == generated - 10
    frames = session.drain_frames(5.0)
    assert [f.seq for f in frames] == list(range(generated - 10, generated))
    assert session.stats(5.0)["dropped_frames"] == generated - 10


def test_stalled_worker_skips_stale_hops_with_bounded_audio() -> None:
    cfg = config(stale_window_s=0.5)
    session = Session(cfg, "a")
    first: HopRequest | None = None
    for i in range(100):  # 10 s in real time, worker stuck on the first request
        now = 0.1 * (i + 1)
        session.feed_audio(np.zeros(1600, np.float32), now)
        reqs = session.ready_hops(now)
        if first is None and reqs:
            first = reqs[0]
        else:
            assert reqs == []
        assert session.buffered_samples <= (0.5 + 0.1 + 0.2) * SR
        assert session.arrival_log_len <= 30
    assert first is not None and session.skipped_hops > 0
    assert session.dropped_frames == 3 * session.skipped_hops
    # the worker comes back: skipped frames are a counted gap, the next hop resets state
    session.complete_hop(first.request_id, fake_coeffs(first), 10.0)
    (nxt,) = session.ready_hops(10.0)
    assert nxt.reset_state and nxt.sample_start == s_of(nxt.frame_start)
    arrived = 0.1 * (nxt.sample_start // 1600 + 1)
    assert 10.0 - arrived <= 0.5 + 1e-9  # its first frame's audio is not stale
    session.complete_hop(nxt.request_id, fake_coeffs(nxt), 10.0)
    seqs = [f.seq for f in session.drain_frames(10.0)]
    assert seqs == [0, 1, 2] + list(range(nxt.frame_start, nxt.frame_start + 3))
    assert nxt.frame_start - 3 == session.dropped_frames


def test_no_skipping_when_disabled() -> None:
    session = Session(config(stale_window_s=math.inf), "a")
    session.feed_audio(noise(3.0), 0.0)
    frames = pump(session, 100.0)
    assert [f.seq for f in frames] == list(range(len(frames))) and session.skipped_hops == 0


def test_fast_sender_is_served_at_real_time_pace_not_skipped() -> None:
    # A whole 5 s file arrives at t=0; the worker then needs 0.09 s per 0.1 s hop (just faster
    # than real time). Every hop is due at first arrival + t_k, never more than 1 s overdue.
    session = Session(config(stale_window_s=1.0), "a")
    for i in range(0, 5 * SR, SR // 2):
        session.feed_audio(noise(0.5, seed=i), 0.0)
    session.end(0.0)
    now, frames = 0.0, []
    while not session.finished:
        for req in session.ready_hops(now):
            now += 0.09
            session.complete_hop(req.request_id, fake_coeffs(req), now)
        frames += session.drain_frames(now)
    assert session.skipped_hops == 0 and [f.seq for f in frames] == list(range(150))


def test_fast_sender_on_a_stalled_worker_still_skips() -> None:
    session = Session(config(stale_window_s=1.0), "a")
    session.feed_audio(noise(1.0), 0.0)
    session.feed_audio(noise(1.0, seed=1), 0.0)
    (first,) = session.ready_hops(0.0)
    session.complete_hop(first.request_id, fake_coeffs(first), 3.0)  # stalled for 3 s
    session.ready_hops(3.0)
    assert session.skipped_hops > 0


# ------------------------------------------------------------------ interrupt


def test_interrupt_drops_pending_audio_and_eases_to_zero() -> None:
    cfg = config(interrupt_ease_frames=6, stale_window_s=math.inf)
    session = Session(cfg, "a")
    log: list[HopRequest] = []
    session.feed_audio(noise(1.0), 1.0)
    before = pump(session, 1.0, log)
    session.feed_audio(noise(0.5, seed=5), 1.5)  # pending audio, never processed
    next_frame = before[-1].seq + 1
    session.interrupt(1.5)
    eased = session.drain_frames(1.5)  # synthesised at once: nothing was in flight
    assert [f.seq for f in eased] == list(range(next_frame, next_frame + 6))
    last = before[-1].coeffs
    for j, frame in enumerate(eased):
        np.testing.assert_allclose(frame.coeffs, last * (1 - (j + 1) / 6), atol=1e-6)
    assert not eased[-1].coeffs.any()
    assert session.ready_hops(1.5) == []  # the pending audio is gone
    fresh = noise(0.3, seed=9)
    session.feed_audio(fresh, 1.8)
    (req,) = session.ready_hops(1.8)
    assert req.reset_state and req.frame_start == next_frame + 6
    assert req.sample_start == s_of(next_frame + 6)
    np.testing.assert_array_equal(req.samples, fresh[: req.samples.size])
    session.complete_hop(req.request_id, fake_coeffs(req), 1.8)
    after = session.drain_frames(1.8)
    assert after[0].seq == next_frame + 6 and after[0].coeffs[1] == 1.0  # full gain again
    assert after[0].latency_ms == pytest.approx(0.0)
    assert session.dropped_frames == 0


def test_interrupt_eases_in_flight_hop_then_synthesises() -> None:
    cfg = config(interrupt_ease_frames=4, lookahead_s=0.0)
    session = Session(cfg, "a")
    session.feed_audio(np.zeros(2000, np.float32), 0.0)
    (req,) = session.ready_hops(0.0)
    session.interrupt(0.01)
    assert session.drain_frames(0.01) == []  # waits for the in-flight frames
    session.complete_hop(req.request_id, np.ones((3, K), np.float32), 0.02)
    frames = session.drain_frames(0.02)
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert [float(f.coeffs[0]) for f in frames] == [0.75, 0.5, 0.25, 0.0]
    assert frames[3].latency_ms == pytest.approx(10.0)  # synthesised: counted from interrupt
    session.end(0.03)
    assert session.ready_hops(0.03) == [] and session.finished


def test_interrupt_before_any_frame_is_harmless() -> None:
    session = Session(config(), "a")
    session.feed_audio(noise(0.5), 0.0)
    session.interrupt(0.0)
    session.end(0.0)
    assert session.ready_hops(0.0) == [] and session.drain_frames(0.0) == []
    assert session.finished


# ------------------------------------------------------------------ identity


def test_identity_blend_ramps_over_configured_frames() -> None:
    session = Session(config(identity_blend_frames=6, stale_window_s=math.inf), "a")
    log: list[HopRequest] = []
    session.feed_audio(noise(0.5), 0.0)
    pump(session, 0.0, log)
    session.feed_audio(noise(1.0), 0.5)  # buffered: the switch overtakes it
    switch_frame = log[-1].frame_start + log[-1].n_frames
    session.set_identity("b", 0.5)
    assert session.identity == "b"
    pump(session, 0.5, log)
    blends = [b for r in log for b in r.identity]
    assert all(b == blends[0] for b in blends[:switch_frame])
    assert (blends[0].from_identity, blends[0].to_identity, blends[0].alpha) == ("a", "a", 1.0)
    ramp = blends[switch_frame : switch_frame + 6]
    assert [b.alpha for b in ramp] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert all(b.from_identity == "a" and b.to_identity == "b" for b in ramp[:-1])
    assert all((b.from_identity, b.to_identity, b.alpha) == ("b", "b", 1.0)
               for b in blends[switch_frame + 5 :])


def test_identity_switch_mid_blend_starts_from_dominant() -> None:
    session = Session(config(identity_blend_frames=30, lookahead_s=0.0), "a")
    session.set_identity("b", 0.0)
    session.feed_audio(np.zeros(SR, np.float32), 0.0)
    log: list[HopRequest] = []
    pump(session, 0.0, log)  # 30 frames: alpha reaches 29/30 then 1 at frame 29
    session.set_identity("c", 1.0)
    session.feed_audio(np.zeros(1600, np.float32), 1.0)
    pump(session, 1.0, log)
    assert log[-1].identity[0].from_identity == "b"
    session.set_identity("c", 1.0)  # same target again: no restart
    assert session.identity == "c"


# ------------------------------------------------------------------ contract errors


def test_complete_hop_checks() -> None:
    session = Session(config(), "a")
    session.feed_audio(np.zeros(SR, np.float32), 0.0)
    (req,) = session.ready_hops(0.0)
    with pytest.raises(ValueError, match="shape"):
        session.complete_hop(req.request_id, np.zeros((2, K)), 0.0)
    session.complete_hop(req.request_id, np.zeros((3, K)), 0.0)
    with pytest.raises(ValueError, match="unknown"):
        session.complete_hop(req.request_id, np.zeros((3, K)), 0.0)
    with pytest.raises(ValueError):
        config(hop_frames=0)


# ------------------------------------------------------------------ properties


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 6000), min_size=1, max_size=15),
    st.lists(st.booleans(), min_size=1, max_size=15),
    st.integers(1, 4),
)
def test_any_chunking_and_schedule_gives_every_frame_once(
    chunks: list[int], pumps: list[bool], in_flight: int
) -> None:
    session = Session(config(stale_window_s=math.inf, max_in_flight_hops=in_flight), "a")
    frames: list[OutFrame] = []
    pending: list[HopRequest] = []
    for i, n in enumerate(chunks):
        session.feed_audio(np.zeros(n, np.float32), float(i))
        pending += session.ready_hops(float(i))
        if pumps[i % len(pumps)] and pending:
            for req in pending:
                session.complete_hop(req.request_id, fake_coeffs(req), float(i))
            pending = []
            frames += session.drain_frames(float(i))
    session.end(99.0)
    for req in pending:
        session.complete_hop(req.request_id, fake_coeffs(req), 99.0)
    frames += pump(session, 99.0)
    assert [f.seq for f in frames] == list(range(math.ceil(sum(chunks) * 30 / SR)))
    assert session.finished and session.arrival_log_len == 0 and session.buffered_samples == 0


# ---- policy moved into the core: identity "auto", the input resampler, end-of-stream flush


def test_auto_identity_collects_the_pick_seconds_once_then_blends_to_the_pick() -> None:
    session = Session(config(identity_pick_s=0.5, identity_blend_frames=3), "auto")
    assert session.auto_identity_pending and session.identity == "mean"
    session.feed_audio(np.full(SR // 4, 0.1, np.float32), now=0.0)
    assert session.identity_pick_audio() is None  # 0.25 s heard, 0.5 s needed
    session.feed_audio(np.full(SR, 0.2, np.float32), now=0.25)
    audio = session.identity_pick_audio()
    assert audio is not None and audio.size == SR // 2  # exactly the pick seconds, no more
    assert audio[0] == pytest.approx(0.1) and audio[-1] == pytest.approx(0.2)
    assert session.identity_pick_audio() is None  # handed over once
    session.identity_picked("bob", now=0.3)
    assert not session.auto_identity_pending and session.identity == "bob"
    reqs = session.ready_hops(0.3)
    assert reqs[0].identity[0].from_identity == "mean"
    assert reqs[0].identity[-1].to_identity == "bob"
    assert [b.alpha for b in reqs[0].identity] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_an_explicit_identity_overtakes_a_pick_in_flight() -> None:
    session = Session(config(identity_pick_s=0.1), "auto")
    session.feed_audio(np.zeros(SR // 5, np.float32), now=0.0)
    assert session.identity_pick_audio() is not None
    session.set_identity("carol", now=0.1)
    session.identity_picked("bob", now=0.2)  # arrives late: ignored
    assert session.identity == "carol" and not session.auto_identity_pending


def test_interrupt_restarts_the_pick_from_what_is_said_next() -> None:
    session = Session(config(identity_pick_s=0.5), "auto")
    session.feed_audio(np.full(SR // 4, 0.5, np.float32), now=0.0)
    session.interrupt(now=0.25)
    session.feed_audio(np.full(SR // 2, -0.5, np.float32), now=0.3)
    audio = session.identity_pick_audio()
    assert audio is not None and audio.size == SR // 2 and (audio == -0.5).all()


def test_a_failed_pick_keeps_the_mean_identity() -> None:
    session = Session(config(identity_pick_s=0.1), "auto")
    session.feed_audio(np.zeros(SR // 5, np.float32), now=0.0)
    assert session.identity_pick_audio() is not None
    session.identity_picked(None, now=0.1)
    assert session.identity == "mean" and not session.auto_identity_pending


def test_input_at_another_rate_is_resampled_and_end_flushes_the_tail() -> None:
    session = Session(config(stale_window_s=math.inf), "a")
    n_in = 48000 + 7  # 1 s and a bit at 48 kHz, in uneven chunks
    x = np.sin(np.arange(n_in) * 2 * np.pi * 440 / 48000).astype(np.float32)
    for a, b in [(0, 1000), (1000, 1001), (1001, 30000), (30000, n_in)]:
        session.feed_audio(x[a:b], now=b / 48000, rate_hz=48000)
    session.end(now=1.1)
    assert session.stats(1.1)["audio_received_s"] == pytest.approx(math.ceil(n_in / 3) / SR)
    frames = []
    while not session.finished:
        frames += pump(session, now=2.0)
    assert [f.seq for f in frames] == list(range(math.ceil(math.ceil(n_in / 3) * 30 / SR)))


def test_for_model_takes_rates_lookahead_and_pick_seconds_from_the_contract() -> None:
    from types import SimpleNamespace

    contract = SimpleNamespace(fps=25, sample_rate_hz=22050, lookahead_s=0.08,
                               identity_pick_s=2.0)
    cfg = SessionConfig.for_model(contract, hop_frames=1)  # type: ignore[arg-type]
    assert (cfg.fps, cfg.sample_rate_hz, cfg.lookahead_s, cfg.identity_pick_s,
            cfg.hop_frames) == (25, 22050, 0.08, 2.0, 1)
    assert cfg.lookahead_samples == round(0.08 * 22050)


# ---- one-frame hops (the default): a frame goes to the model as soon as its audio is in


def test_one_frame_hop_is_ready_exactly_when_its_lookahead_arrived() -> None:
    session = Session(config(hop_frames=1, max_hop_frames=8, lookahead_s=0.1), "a")
    need0 = s_of(0) + 1600 + 1
    session.feed_audio(np.zeros(need0 - 1, np.float32), 0.0)
    assert session.ready_hops(0.0) == []
    session.feed_audio(np.zeros(1, np.float32), 0.1)
    (req,) = session.ready_hops(0.1)
    assert (req.frame_start, req.n_frames, req.samples.size) == (0, 1, need0)
    session.complete_hop(req.request_id, fake_coeffs(req), 0.1)
    session.feed_audio(np.zeros(s_of(1) - s_of(0), np.float32), 0.2)  # exactly frame 1's audio
    (req,) = session.ready_hops(0.2)
    assert (req.frame_start, req.n_frames) == (1, 1)


@pytest.mark.parametrize("ready, sizes", [(1, [1]), (2, [2]), (3, [2, 1]), (7, [4, 2, 1]),
                                          (8, [8]), (13, [8, 4, 1]), (20, [8, 8, 4])])
def test_a_session_catching_up_sends_power_of_two_hops(ready: int, sizes: list[int]) -> None:
    session = Session(config(hop_frames=1, max_hop_frames=8, lookahead_s=0.0,
                             stale_window_s=math.inf), "a")
    session.feed_audio(np.zeros(s_of(ready - 1) + 1, np.float32), 0.0)  # frames 0..ready-1
    got = []
    while reqs := session.ready_hops(0.0):
        (req,) = reqs
        got.append(req.n_frames)
        session.complete_hop(req.request_id, fake_coeffs(req), 0.0)
    assert got == sizes
    assert [f.seq for f in session.drain_frames(0.0)] == list(range(ready))


def test_one_frame_hops_give_the_same_frames_as_three_frame_hops() -> None:
    audio = noise(1.37, seed=3)
    one = stream(audio, 320, Session(config(hop_frames=1, max_hop_frames=8), "a"))
    three = stream(audio, 320, Session(config(), "a"))
    assert [f.seq for f in one] == [f.seq for f in three] == list(range(len(one)))
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a.coeffs, b.coeffs)


# ---- hostile input: a sender far ahead of real time, many small chunks, non-finite output


def test_a_sender_ahead_of_real_time_is_told_to_wait_until_within_max_ahead() -> None:
    session = Session(config(max_ahead_s=2.0), "a")
    for i in range(4):  # 4 s of audio at t = 0: 4 s ahead of real time
        session.feed_audio(np.zeros(SR, np.float32), 0.0)
        assert session.ahead_s(0.0) == pytest.approx(i + 1)
    assert session.read_delay_s(0.0) == pytest.approx(2.0)  # 4 s ahead, 2 allowed
    assert session.read_delay_s(1.5) == pytest.approx(0.5)  # real time caught up 1.5 s
    assert session.read_delay_s(2.0) == 0.0
    session.feed_audio(np.zeros(SR, np.float32), 2.0)
    assert session.ahead_s(2.0) == pytest.approx(3.0)
    assert session.read_delay_s(2.0) == pytest.approx(1.0)


def test_a_live_sender_is_never_told_to_wait_and_silence_earns_no_credit() -> None:
    session = Session(config(max_ahead_s=2.0), "a")
    for i in range(100):  # real time, 20 ms chunks
        session.feed_audio(np.zeros(320, np.float32), (i + 1) * 0.02)
        assert session.read_delay_s((i + 1) * 0.02) == 0.0
    # 100 s of silence, then a 3-s burst: the quiet time is not a credit to burst with
    for _ in range(3):
        session.feed_audio(np.zeros(SR, np.float32), 102.0)
    assert session.ahead_s(102.0) == pytest.approx(3.0)
    assert session.read_delay_s(102.0) == pytest.approx(1.0)


def test_feeding_many_small_chunks_is_linear_not_quadratic() -> None:
    # 120 s of audio in 20 ms chunks, nothing consumed: re-concatenating the whole buffer on
    # every chunk copies ~23 GB (tens of seconds); appending to a chunk list copies nothing.
    session = Session(config(stale_window_s=math.inf), "a")
    chunk = np.zeros(320, np.float32)
    started = time.perf_counter()
    for i in range(6000):
        session.feed_audio(chunk, i * 0.02)
    elapsed = time.perf_counter() - started
    assert session.buffered_samples == 6000 * 320
    assert elapsed < 1.0, f"{elapsed:.1f} s to feed 6000 chunks"
    # and the hop samples cut across thousands of chunks are exactly the timeline's
    (req,) = session.ready_hops(120.0)
    assert req.sample_start == 0 and req.samples.size == s_of(2) + 1600 + 1


def test_hop_samples_are_exact_across_tiny_and_large_chunks() -> None:
    audio = noise(2.0, seed=5)
    cuts = [0, 1, 2, 3, 700, 701, 5000, 5001, 5002, 20000, audio.size]
    session = Session(config(stale_window_s=math.inf), "a")
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        session.feed_audio(audio[a:b], 0.0)
    got = []
    while reqs := session.ready_hops(0.0):
        for req in reqs:
            assert req.sample_start == sum(r.size for r in got)
            got.append(req.samples)
            session.complete_hop(req.request_id, fake_coeffs(req), 0.0)
    joined = np.concatenate(got)
    np.testing.assert_array_equal(joined, audio[: joined.size])


def test_non_finite_model_output_drops_the_hop_and_resets_the_stream() -> None:
    session = Session(config(stale_window_s=math.inf), "a")
    session.feed_audio(np.zeros(SR, np.float32), 0.0)
    (first,) = session.ready_hops(0.0)
    session.complete_hop(first.request_id, fake_coeffs(first), 0.0)
    (bad,) = session.ready_hops(0.0)
    session.complete_hop(bad.request_id, np.full((3, K), np.inf), 0.0)  # no exception
    (nxt,) = session.ready_hops(0.0)
    assert nxt.reset_state and nxt.frame_start == 6 and nxt.sample_start == s_of(6)
    session.complete_hop(nxt.request_id, fake_coeffs(nxt), 0.0)
    (odd,) = session.ready_hops(0.0)  # vertex offsets that are not finite count the same
    session.complete_hop(odd.request_id, fake_coeffs(odd), 0.0,
                         offsets=np.full((3, 4, 3), np.nan, np.float32))
    seqs = [f.seq for f in session.drain_frames(0.0)]
    assert seqs == [0, 1, 2, 6, 7, 8]  # frames 3-5 and 9-11 were never sent
    assert (session.failed_hops, session.dropped_frames, session.skipped_hops) == (2, 6, 0)
    assert session.ready_hops(0.0)[0].reset_state


def test_a_loaded_worker_hint_makes_hops_wait_for_more_frames() -> None:
    session = Session(config(hop_frames=1, max_hop_frames=8, lookahead_s=0.0,
                             stale_window_s=math.inf), "a")
    session.feed_audio(np.zeros(s_of(2) + 1, np.float32), 0.0)  # frames 0..2 ready
    assert session.ready_hops(0.0, min_frames=4) == []
    session.feed_audio(np.zeros(s_of(3) - s_of(2), np.float32), 0.1)  # frame 3 too
    (req,) = session.ready_hops(0.1, min_frames=4)
    assert (req.frame_start, req.n_frames) == (0, 4)
    session.complete_hop(req.request_id, fake_coeffs(req), 0.1)
    session.feed_audio(np.zeros(s_of(5) - s_of(3), np.float32), 0.2)  # frames 4 and 5
    session.end(0.2)
    (req,) = session.ready_hops(0.2, min_frames=4)  # after the end the rest goes regardless
    assert (req.frame_start, req.n_frames) == (4, 2)
