"""Hostile clients against a real server on localhost: sockets that never say hello, clients that
never read, floods of audio, absurd samples, a model that returns NaN, huge echoes, token
guessing; and a synchronous fuzz of the connection core (protocol + session)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime import messages as wire
from realtime.admission import AdmissionConfig
from realtime.audio import encode_pcm
from realtime.client import StreamOptions, stream_file
from realtime.protocol import AudioReceived, ServerProtocol, ServerProtocolConfig
from realtime.session import Session, SessionConfig
from tests.realtime.conftest import read_to_close, ws_url

FPS = 30


def hello(**fields: Any) -> bytes:
    base: dict[str, Any] = {"sample_rate": 16000, "encoding": "pcm_s16le"}
    return wire.encode(wire.Hello(**{**base, **fields}))


def audio(samples: np.ndarray, encoding: str = "pcm_s16le") -> bytes:
    return wire.encode(wire.Audio(data=encode_pcm(samples, encoding)))


async def open_ws(url: str, source: str = "127.0.0.1", rcvbuf: int | None = None,
                  **kwargs: Any) -> ClientConnection:
    """A WebSocket from local address ``source`` (any 127/8 address reaches the server: a
    second client address), optionally with a tiny receive buffer (a peer that stops reading
    fills it at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.setblocking(False)
    port = int(url.split(":")[2].split("/")[0])
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await connect(url, sock=sock, max_size=None, **kwargs)


async def session_from(url: str, messages: list[bytes], source: str = "127.0.0.1",
                       ) -> tuple[list[wire.Message], int | None]:
    ws = await open_ws(url, source)
    for message in messages:
        try:
            await ws.send(message)
        except ConnectionClosed:
            break
    return await read_to_close(ws)


def error_of(received: list[wire.Message]) -> tuple[str, str] | None:
    errors = [(m.code, m.message) for m in received if isinstance(m, wire.Error)]
    assert len(errors) <= 1
    return errors[0] if errors else None


async def wait_for(predicate: Any, timeout_s: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def short_speech(speech: Any) -> np.ndarray:
    return speech.audio16[:8000]


def frames_of(n_samples: int) -> int:
    return math.ceil(n_samples * FPS / 16000)


# ------------------------------------------------------------------ 1. lock-out without a token
async def test_silent_sockets_do_not_lock_the_rightful_client_out(make_server, speech):
    server = await make_server(max_sessions=2, token="T", hello_timeout_s=1.0)
    url = ws_url(server)
    opened = time.monotonic()  # before the first accept: no deadline can fall before +1 s
    silent = [await open_ws(url) for _ in range(4)]  # more silent sockets than session slots
    short = short_speech(speech)
    result = await stream_file(url, short, 16000, StreamOptions(token="T", realtime=False))
    assert result.seq == list(range(frames_of(short.size))) and result.close_code == 1000
    for ws in silent:  # each is told why, with 1008, once the hello deadline passed
        received, close_code = await read_to_close(ws)
        assert error_of(received) is not None
        assert (error_of(received)[0], close_code) == ("hello_timeout", 1008)  # type: ignore[index]
    assert 1.0 <= time.monotonic() - opened < 4.0
    await wait_for(lambda: server.health()["connections"] == 0, 2.0)
    assert server.health()["sessions"] == 0


async def test_connections_per_address_are_capped(make_server, speech):
    server = await make_server(admission=AdmissionConfig(max_connections_per_address=2))
    url = ws_url(server)
    held = [await open_ws(url), await open_ws(url)]
    received, close_code = await session_from(url, [hello()])
    assert (error_of(received)[0], close_code) == ("too_many_connections", 1013)  # type: ignore[index]
    short = short_speech(speech)
    msgs = [hello(), audio(short), wire.encode(wire.End())]
    received, close_code = await session_from(url, msgs, source="127.0.0.2")  # another address
    assert close_code == 1000, error_of(received)
    for ws in held:
        await ws.close()


async def test_unauthenticated_connections_are_bounded_globally(make_server):
    server = await make_server(admission=AdmissionConfig(max_pending_hellos=2))
    url = ws_url(server)
    first, _second = await open_ws(url, "127.0.0.2"), await open_ws(url, "127.0.0.3")
    received, close_code = await session_from(url, [hello()], source="127.0.0.4")
    assert (error_of(received)[0], close_code) == ("server_full", 1013)  # type: ignore[index]
    await first.send(hello())  # it becomes a session: no longer waiting for a hello
    assert isinstance(wire.decode(await first.recv(), direction="to_client"), wire.Ready)
    late = await open_ws(url, "127.0.0.4")
    await late.send(hello())
    assert isinstance(wire.decode(await late.recv(), direction="to_client"), wire.Ready)


# ------------------------------------------------------------------ 2. a client that stops reading
async def test_a_client_that_stops_reading_is_shed_and_its_slot_freed(make_server, speech):
    send_timeout_s = 1.0
    server = await make_server(send_timeout_s=send_timeout_s)
    url = ws_url(server)
    healthy = asyncio.create_task(stream_file(url, speech.audio16, 16000, StreamOptions()))
    ws = await open_ws(url, rcvbuf=4096, max_queue=1)
    await ws.send(hello(format="f32"))  # ~32 KB frames, 30 a second
    ready = wire.decode(await ws.recv(), direction="to_client")
    assert isinstance(ready, wire.Ready)

    async def keep_talking() -> None:  # never idle, never reading
        chunk = audio(np.zeros(320, np.float32))
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.send(chunk)
                await asyncio.sleep(0.02)

    blocked: list[float] = []  # when its frames started piling up: the socket took no more

    def freed() -> bool:
        mine = [e for e in server.sessions() if e["session"] == ready.session]
        if mine and mine[0].get("queue_depth", 0) < 15:
            blocked.clear()  # a passing delay, not a stuck socket
        elif mine and not blocked:
            blocked.append(time.monotonic())
        return not mine

    talker = asyncio.create_task(keep_talking())
    await wait_for(freed, 15.0)  # buffers fill (seconds on loopback), then the send timeout
    assert blocked and time.monotonic() - blocked[0] < send_timeout_s + 1.0
    await asyncio.wait_for(talker, 5.0)
    result = await healthy  # the other client was served all along
    assert result.seq == list(range(frames_of(speech.audio16.size)))
    assert server.health()["sessions"] == 0


# ------------------------------------------------------------------ 3. audio floods
async def test_a_fast_file_upload_is_paced_by_the_ahead_bound(make_server, speech, tiny_model):
    max_ahead_s = 1.0
    server = await make_server(session=SessionConfig.for_model(tiny_model.contract,
                                                               max_ahead_s=max_ahead_s))
    six_s = np.tile(speech.audio16, math.ceil(6 * 16000 / speech.audio16.size))[: 6 * 16000]
    ahead: list[float] = []
    first_audio: list[float] = []

    async def watch() -> None:
        while True:
            for entry in server.sessions():
                got = entry.get("audio_received_s", 0.0)
                if got and not first_audio:
                    first_audio.append(time.monotonic())
                if first_audio:
                    ahead.append(got - (time.monotonic() - first_audio[0]))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        result = await stream_file(ws_url(server), six_s, 16000, StreamOptions(realtime=False))
    finally:
        watcher.cancel()
    assert result.seq == list(range(frames_of(six_s.size))) and result.close_code == 1000
    assert result.wall_s >= 6.0 - max_ahead_s - 0.5 - 0.3  # paced: 0.5 s messages
    assert max(ahead) <= max_ahead_s + 0.5 + 0.3  # the bound plus one message, plus sampling


async def test_a_flood_of_audio_is_held_back_not_buffered(make_server):
    server = await make_server()  # max_ahead_s: the default (5 s)
    ws = await open_ws(ws_url(server))
    await ws.send(hello())
    await ws.recv()
    second = audio(np.zeros(16000, np.float32))
    started = time.monotonic()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await ws.send(second)
            sent += 1

    flooder = asyncio.create_task(flood())
    await asyncio.sleep(3.0)
    flooder.cancel()
    (entry,) = server.sessions()
    received_s = entry["audio_received_s"]
    elapsed = time.monotonic() - started
    # received: real time + 5 s + one message; the rest waits in socket buffers, unread
    assert received_s <= elapsed + 5.0 + 1.0 + 0.5, (received_s, sent)
    conn = next(iter(server._connections.values()))
    assert conn.session.buffered_samples <= (elapsed + 5.0 + 1.0 + 1.5) * 16000
    ws.transport.abort()  # a close frame would wait behind the unread flood


# ------------------------------------------------------------------ 4. absurd samples, NaN output
async def test_huge_f32_samples_are_the_clients_error_not_internal(make_server, speech):
    server = await make_server()
    url = ws_url(server)
    huge = np.full(1600, 1e20, np.float32)
    received, close_code = await session_from(
        url, [hello(encoding="pcm_f32le"), audio(huge, "pcm_f32le")])
    code, message = error_of(received) or ("", "")
    assert (code, close_code) == ("bad_audio", 1003)
    assert "sample 0" in message
    loud = np.clip(speech.audio16[:8000] * 1.8, -1.9, 1.9)  # overshoot: clipped, not refused
    received, close_code = await session_from(
        url, [hello(encoding="pcm_f32le"), audio(loud, "pcm_f32le"), wire.encode(wire.End())])
    assert close_code == 1000, error_of(received)


async def test_a_non_finite_model_output_drops_that_hop_not_the_session(
        make_server, speech, tiny_model, monkeypatch):
    real_step = tiny_model.stream_step
    calls = {"n": 0}

    def nan_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        out = real_step(*args, **kwargs)
        return out * np.nan if calls["n"] == 3 else out

    monkeypatch.setattr(tiny_model, "stream_step", nan_once)
    server = await make_server()
    result = await stream_file(ws_url(server), speech.audio16, 16000,
                               StreamOptions(realtime=False))
    n = frames_of(speech.audio16.size)
    assert result.close_code == 1000 and result.end_frames == len(result.seq)
    assert 0 < n - len(result.seq) <= 8  # one hop's frames are missing, the rest came
    assert result.seq == sorted(set(result.seq)) and result.seq[-1] == n - 1


# ------------------------------------------------------------------ 5. amplification
async def test_errors_and_logs_do_not_echo_what_the_client_sent(make_server, caplog):
    caplog.set_level(logging.DEBUG, logger="talker")
    server = await make_server()
    url = ws_url(server)
    huge = "x" * 200_000
    cases = [[hello(identity=huge)], [msgpack.packb({"type": huge})],
             [hello(encoding="pcm_f32le"), wire.encode(wire.Identity(identity=huge))]]
    for messages in cases:
        received, close_code = await session_from(url, messages)
        code, message = error_of(received) or ("", "")
        assert close_code == 1003 and len(message) < 300, (code, message[:100])
    # a client reconnecting in a loop: the log says a bounded amount about it
    await asyncio.gather(*(session_from(url, [msgpack.packb({"type": huge})])
                           for _ in range(60)))
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("talker")]
    assert max(len(line) for line in logged) < 400
    assert len(logged) < 45, len(logged)
    assert sum(len(line) for line in logged) < 20_000


# ------------------------------------------------------------------ 6. auth
async def test_wrong_tokens_back_off_per_address(make_server, speech):
    server = await make_server(token="T", admission=AdmissionConfig(
        auth_failures_allowed=3, auth_backoff_s=2.0))
    url = ws_url(server)
    for _ in range(3):
        received, close_code = await session_from(url, [hello(token="guess")])
        assert (error_of(received)[0], close_code) == ("bad_token", 1008)  # type: ignore[index]
    locked_at = time.monotonic()
    received, close_code = await session_from(url, [hello(token="T")])  # even the right one
    code, message = error_of(received) or ("", "")
    assert (code, close_code) == ("too_many_attempts", 1008) and "try again in" in message
    short = short_speech(speech)
    msgs = [hello(token="T"), audio(short), wire.encode(wire.End())]
    received, close_code = await session_from(url, msgs, source="127.0.0.2")
    assert close_code == 1000, error_of(received)  # another address is unaffected
    await asyncio.sleep(max(0.0, locked_at + 2.1 - time.monotonic()))
    received, close_code = await session_from(url, msgs)  # the delay is over
    assert close_code == 1000, error_of(received)


def test_the_serve_token_comes_from_the_flag_a_file_or_the_environment(tmp_path):
    from models.errors import ConfigError
    from realtime.cli import serve_token

    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    assert serve_token("flag", None, {}) == "flag"
    assert serve_token(None, str(secret), {"TALKER_TOKEN": "env"}) == "s3cret"
    assert serve_token(None, None, {"TALKER_TOKEN": "env"}) == "env"
    assert serve_token(None, None, {}) is None
    with pytest.raises(ConfigError, match="both"):
        serve_token("flag", str(secret), {})
    with pytest.raises(ConfigError, match="empty"):
        (tmp_path / "empty").write_text("\n")
        serve_token(None, str(tmp_path / "empty"), {})
    with pytest.raises(ConfigError, match="cannot read"):
        serve_token(None, str(tmp_path / "missing"), {})


# ------------------------------------------------------------------ 7. shutdown
async def test_stop_closes_every_client_with_1001_promptly_even_one_that_never_reads(
        make_server, speech):
    server = await make_server(send_timeout_s=1.0)
    url = ws_url(server)
    reader_ws = await open_ws(url)
    await reader_ws.send(hello())
    await reader_ws.recv()
    stuck = await open_ws(url, rcvbuf=4096, max_queue=1)
    await stuck.send(hello(format="f32"))
    await stuck.recv()
    for i in range(0, 3 * 16000, 8000):
        await stuck.send(audio(np.tile(speech.audio16, 4)[i : i + 8000]))
    await asyncio.sleep(0.3)  # its frames pile up in the socket buffers
    started = time.monotonic()
    await asyncio.wait_for(server.stop(), 10.0)
    assert time.monotonic() - started < 1.0 + 2.0
    _, close_code = await read_to_close(reader_ws)
    assert close_code == 1001


# ------------------------------------------------------------------ fuzz: protocol + session core
SR = 16000
fuzz_config = SessionConfig(fps=30, sample_rate_hz=SR, lookahead_s=0.05, identity_pick_s=0.2,
                            max_ahead_s=2.0, stale_window_s=0.5)
f32_values = st.sampled_from([0.0, 0.5, -1.0, 1.0, 1.5, -2.5, 1e20, -1e38, np.nan, np.inf])
audio_messages = st.builds(
    lambda vals, n, enc: wire.encode(wire.Audio(data=np.resize(
        np.array(vals, "<f4"), n).tobytes() if enc == "f" else bytes(n))),
    st.lists(f32_values, min_size=1, max_size=4), st.integers(0, 5000), st.sampled_from("fs"))
client_messages = st.one_of(
    audio_messages,
    st.sampled_from([hello(encoding="pcm_f32le"), hello(identity="auto"), hello(sample_rate=48000),
                     wire.encode(wire.Interrupt()), wire.encode(wire.End()),
                     wire.encode(wire.Identity(identity="b")), b"\x93\x01\x02\x03"]),
    st.binary(max_size=40),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(client_messages, st.floats(0.0, 3.0)), max_size=10),
       st.sampled_from([1.0, 1e36]))
def test_fuzzed_connections_never_end_internal(steps: list[tuple[bytes, float]],
                                               model_gain: float) -> None:
    """600 random connections through the sans-I/O core, with a model whose output overflows
    to inf (model_gain 1e36): every one ends as a client error or runs on."""
    proto = ServerProtocol(ServerProtocolConfig(identities=("a", "b"), hello_timeout_s=5.0))
    session: Session | None = None
    now = 0.0
    for data, dt in steps:
        now += dt
        proto.check_deadline(now)
        proto.receive(data, now)
        for event in proto.events_received():
            if isinstance(event, wire.Hello):
                session = Session(fuzz_config, event.identity or "a")
            elif session is None:
                continue
            elif isinstance(event, AudioReceived) and not session.ended:
                session.feed_audio(event.samples, now, event.sample_rate_hz)
            elif isinstance(event, wire.Interrupt):
                session.interrupt(now)
            elif isinstance(event, wire.Identity):
                session.set_identity(event.identity, now)
            elif isinstance(event, wire.End):
                session.end(now)
        if session is not None:
            assert session.read_delay_s(now) >= 0.0
            for req in session.ready_hops(now):
                with np.errstate(over="ignore", invalid="ignore"):
                    level = np.float32(np.abs(req.samples).sum()) * np.float32(model_gain)
                session.complete_hop(req.request_id, np.full((req.n_frames, 2), level), now)
            session.drain_frames(now)
    assert proto.failure is None or proto.failure.code != "internal"
    if proto.failure is not None:
        assert len(proto.failure.message) < 300
