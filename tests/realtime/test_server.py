"""The /ws server end to end: real websockets on localhost, the tiny random model of the real
class, espeak-ng speech streamed in real time with the library client."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from typing import Any

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime import messages as wire
from realtime.audio import encode_pcm
from realtime.client import ClientError, StreamOptions, StreamResult, open_session, stream_file
from realtime.session import SessionConfig
from tests.realtime.conftest import Speech, read_to_close, ws_url

FPS = 30
PARITY_ATOL_M = 1e-5  # streamed vs offline vertices (metres); float32 round-off is ~1e-8


def expected_frames(n_samples: int, rate: int) -> int:
    """What the server sends for a whole session: frames whose time lies inside the audio."""
    return math.ceil(n_samples * FPS / rate)


def assert_complete(result: StreamResult, n_frames: int) -> None:
    """Every frame, in order, without gaps, t = seq / fps, then `end` and close 1000."""
    assert result.seq == list(range(n_frames))
    assert result.t == pytest.approx([k / FPS for k in range(n_frames)], abs=1e-9)
    assert result.end_frames == n_frames
    assert result.close_code == 1000
    assert all(lat >= 0 for lat in result.server_latency_ms)


async def http_get(port: int, path: str, headers: dict[str, str] | None = None,
                   ) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 GET (the path is sent as is, so traversal attempts stay unnormalised)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), parsed, body


async def health(server: Any) -> dict[str, Any]:
    status, _, body = await http_get(server.port, "/health")
    assert status == 200
    return json.loads(body)


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def hello(**fields: Any) -> bytes:
    base: dict[str, Any] = {"sample_rate": 16000, "encoding": "pcm_s16le"}
    return wire.encode(wire.Hello(**{**base, **fields}))


def audio(samples: np.ndarray, encoding: str = "pcm_s16le") -> bytes:
    return wire.encode(wire.Audio(data=encode_pcm(samples, encoding)))


def raw(**wire: Any) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


async def raw_session(url: str, messages: list[bytes | str], timeout_s: float = 5.0,
                      ) -> tuple[list[wire.Message], int | None]:
    """Send ``messages`` (stopping if the server closes), then read until the close:
    (server messages, close code)."""
    async with connect(url, max_size=None) as ws:
        for message in messages:
            try:
                await ws.send(message)
            except ConnectionClosed:
                break
        return await read_to_close(ws, timeout_s)


def error_of(received: list[wire.Message]) -> str | None:
    errors = [m.code for m in received if isinstance(m, wire.Error)]
    assert len(errors) <= 1
    return errors[0] if errors else None


async def healthy(url: str, speech: Speech, **options: Any) -> StreamResult:
    """A real-time session with espeak-ng speech at 22.05 kHz (resampled by the server)."""
    result = await stream_file(url, speech.audio, speech.rate, StreamOptions(**options))
    assert_complete(result, expected_frames(speech.audio.size, speech.rate))
    return result


# ------------------------------------------------------------------------------ whole sessions
async def test_whole_session_in_real_time_f16_and_f32_with_weights(make_server, speech,
                                                                   tiny_model):
    server = await make_server()
    url = ws_url(server)
    f16, f32 = await asyncio.gather(
        stream_file(url, speech.audio, speech.rate, StreamOptions()),
        stream_file(url, speech.audio, speech.rate, StreamOptions(format="f32", weights=True)),
    )
    n = expected_frames(speech.audio.size, speech.rate)
    assert abs(n - speech.audio.size / speech.rate * FPS) < 1  # duration x 30, rounded up
    template = np.asarray(tiny_model.basis.template, np.float32).reshape(-1, 3)
    for result in (f16, f32):
        assert_complete(result, n)
        ready = result.ready
        assert ready is not None and ready.fps == FPS
        assert list(ready.identities) == ["alice", "bob"] and ready.identity == "alice"
        assert ready.mesh.vertex_count == template.shape[0]
        np.testing.assert_array_equal(
            np.frombuffer(ready.mesh.template, "<f4").reshape(-1, 3), template)
        faces = np.frombuffer(ready.mesh.faces, "<u4")
        assert faces.size > 0 and faces.size % 3 == 0 and faces.max() < template.shape[0]
        assert all(v.shape == template.shape for v in result.vertices)
        assert result.audio_s == pytest.approx(speech.audio.size / speech.rate)
        assert result.stats and result.stats[-1].frames_sent <= n
        assert result.wall_s >= speech.audio.size / speech.rate * 0.9  # it was paced
    assert not f16.weights
    assert len(f32.weights) == n and all(w.shape == (52,) for w in f32.weights)
    assert len(ready.blendshapes) == 52
    # f16 frames are f32 frames rounded: both sit near the template
    assert np.abs(np.stack(f16.vertices) - template).max() < 0.05


@pytest.mark.parametrize("realtime", [True, False], ids=["realtime", "fast"])
async def test_streaming_equals_offline_generate_with_the_session_seed(
        make_server, speech, tiny_model, realtime):
    server = await make_server(seed=40)
    result = await stream_file(ws_url(server), speech.audio16, 16000,
                               StreamOptions(format="f32", realtime=realtime))
    # the first session of a server uses ServerConfig.seed + 1 (documented on ServerConfig)
    coeffs = tiny_model.generate(speech.audio16, identity="alice", seed=41)
    offline = tiny_model.vertices(coeffs)
    streamed = np.stack(result.vertices)
    assert streamed.shape == offline.shape == (expected_frames(speech.audio16.size, 16000),
                                               offline.shape[1], 3)
    np.testing.assert_allclose(streamed, offline, atol=PARITY_ATOL_M, rtol=0)
    template = np.asarray(tiny_model.basis.template, np.float32).reshape(-1, 3)
    assert np.abs(offline - template).max() > 100 * PARITY_ATOL_M  # the check is not vacuous
    other = tiny_model.vertices(tiny_model.generate(speech.audio16, identity="alice", seed=42))
    assert np.abs(other - streamed).max() > 10 * PARITY_ATOL_M  # and the seed matters


async def test_eight_concurrent_sessions_get_every_frame(make_server, speech):
    server = await make_server()
    url = ws_url(server)
    options = StreamOptions(keep_vertices=False)
    results = await asyncio.gather(*(stream_file(url, speech.audio16, 16000, options)
                                     for _ in range(8)))
    n = expected_frames(speech.audio16.size, 16000)
    for result in results:
        assert_complete(result, n)
    assert max(server.engine.batch_sizes) > 1  # hops of different sessions shared a forward
    assert (await health(server))["sessions"] == 0


# ------------------------------------------------------------------------------ bad input
ONE_S = np.zeros(16000, np.float32)
BAD_INPUT: dict[str, tuple[list[bytes | str], str, int]] = {
    "text message": (["hello"], "text_frame", 1003),
    "not msgpack": ([b"\xc1\x00"], "bad_msgpack", 1003),
    "not a map": ([msgpack.packb([1, 2])], "not_a_map", 1003),
    "unknown type": ([raw(type="dance")], "unknown_type", 1003),
    "audio before hello": ([audio(ONE_S[:320])], "hello_expected", 1003),
    "second hello": ([hello(), hello()], "duplicate_hello", 1003),
    "protocol 2": ([raw(type="hello", protocol=2, sample_rate=16000, encoding="pcm_s16le")],
                   "unsupported_protocol", 1003),
    "missing field": ([raw(type="hello", protocol=1, encoding="pcm_s16le")],
                      "missing_field", 1003),
    "rate as string": ([raw(type="hello", protocol=1, sample_rate="16k",
                            encoding="pcm_s16le")], "bad_field_type", 1003),
    "rate 4000": ([raw(type="hello", protocol=1, sample_rate=4000, encoding="pcm_s16le")],
                  "bad_value", 1003),
    "rate 96000": ([raw(type="hello", protocol=1, sample_rate=96000, encoding="pcm_s16le")],
                   "bad_value", 1003),
    "unknown identity": ([hello(identity="carol")], "unknown_identity", 1003),
    "more than 1 s of audio": ([hello(), audio(np.zeros(16001, np.float32))],
                               "audio_too_long", 1009),
    "message over 256 KiB": ([hello(), b"\x00" * (256 * 1024 + 100)], "too_big", 1009),
    "NaN audio": ([hello(encoding="pcm_f32le"),
                   audio(np.array([0.0, np.nan], np.float32), "pcm_f32le")], "bad_audio", 1003),
    "inf audio": ([hello(encoding="pcm_f32le"),
                   audio(np.array([np.inf, 0.0], np.float32), "pcm_f32le")], "bad_audio", 1003),
    "half a sample": ([hello(), raw(type="audio", data=b"\x00\x01\x02")], "bad_audio", 1003),
    "audio after end": ([hello(), raw(type="end"), audio(ONE_S[:320])],
                        "unexpected_message", 1003),
    "offer without webrtc": ([hello(), raw(type="offer", sdp="v=0")],
                             "unexpected_message", 1003),
    "bad sdp": ([hello(audio="webrtc", sample_rate=48000), raw(type="offer", sdp="nonsense")],
                "bad_value", 1003),
}


async def test_bad_input_gets_its_error_and_close_code_and_spares_a_healthy_session(
        make_server, speech, caplog):
    caplog.set_level(logging.INFO)
    server = await make_server()
    url = ws_url(server)
    session = asyncio.create_task(healthy(url, speech))
    await asyncio.sleep(0.3)  # the healthy session is streaming while the bad ones come and go

    async def run(messages: list[bytes | str]) -> tuple[str | None, int | None]:
        received, close_code = await raw_session(url, messages)
        return error_of(received), close_code

    outcomes = await asyncio.gather(*(run(case[0]) for case in BAD_INPUT.values()))
    got = dict(zip(BAD_INPUT, outcomes, strict=True))
    assert got == {name: (code, close) for name, (_, code, close) in BAD_INPUT.items()}
    await session
    assert (await health(server))["sessions"] == 0
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


async def test_bad_token_is_refused_with_1008(make_server, speech):
    server = await make_server(token="s3cret")
    url = ws_url(server)
    session = asyncio.create_task(healthy(url, speech, token="s3cret"))
    for token in ("wrong", None):
        with pytest.raises(ClientError) as info:
            await open_session(url, StreamOptions(token=token), 16000)
        assert (info.value.code, info.value.close_code) == ("bad_token", 1008)
    await session


async def test_server_full_is_refused_with_1013_until_a_session_ends(make_server, speech):
    server = await make_server(max_sessions=1)
    url = ws_url(server)
    session = asyncio.create_task(healthy(url, speech))

    async def one_session() -> bool:
        return (await health(server))["sessions"] == 1

    await wait_for(one_session)
    received, close_code = await raw_session(url, [hello()])
    assert (error_of(received), close_code) == ("server_full", 1013)
    await session
    short = speech.audio16[:8000]  # the slot is free again
    result = await stream_file(url, short, 16000, StreamOptions(realtime=False))
    assert_complete(result, expected_frames(short.size, 16000))


async def test_a_client_vanishing_mid_stream_leaves_the_server_healthy(make_server, speech,
                                                                      caplog):
    caplog.set_level(logging.INFO)
    server = await make_server()
    url = ws_url(server)
    session = asyncio.create_task(healthy(url, speech))
    ws, _ready = await open_session(url, StreamOptions(), 16000)
    for i in range(0, 16000, 320):  # 1 s in 20 ms chunks, a little faster than real time
        await ws.send(audio(speech.audio16[i : i + 320]))
        await asyncio.sleep(0.01)
    first = wire.decode(await asyncio.wait_for(ws.recv(), 5.0), direction="to_client")
    assert isinstance(first, wire.Frame | wire.Stats)
    ws.transport.abort()  # no close frame, no FIN handshake: the client is just gone

    async def only_the_healthy_one() -> bool:
        return (await health(server))["sessions"] == 1

    await wait_for(only_the_healthy_one)
    await session
    assert (await health(server))["sessions"] == 0
    assert server.engine.queue_depth == 0
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


async def test_a_client_that_never_reads_stays_bounded(make_server, speech, tiny_model):
    max_pending = 30
    send_timeout_s = 2.0
    server = await make_server(send_timeout_s=send_timeout_s, session=SessionConfig.for_model(
        tiny_model.contract, max_pending_frames=max_pending))
    url = ws_url(server)
    session = asyncio.create_task(healthy(url, speech))
    # max_queue=1: the client library stops reading its socket after one unread message; a
    # small receive buffer: the kernel does not hide that for megabytes
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    ws = await connect(url, sock=sock, max_size=None, max_queue=1)
    await ws.send(hello(format="f32"))
    ready = wire.decode(await ws.recv(), direction="to_client")  # the last message it reads
    assert isinstance(ready, wire.Ready)
    depths: list[int] = []
    stats: dict[str, Any] = {}
    piled_up: list[float] = []  # when its frames started piling up: its socket took no more
    gone: list[float] = []

    async def watch() -> None:
        while True:
            mine = [e for e in server.sessions() if e["session"] == ready.session]
            for entry in mine:
                depths.append(entry["queue_depth"])
                stats.update(entry)
                if entry["queue_depth"] < 15:
                    piled_up.clear()  # a passing delay, not a stuck socket
                elif not piled_up:
                    piled_up.append(time.monotonic())
            if not mine and not gone:
                gone.append(time.monotonic())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        speech_5s = np.tile(speech.audio16, math.ceil(5 * 16000 / speech.audio16.size))
        for i in range(0, 5 * 16000, 1600):  # 5 s of audio in 100 ms chunks over ~0.3 s
            await ws.send(audio(speech_5s[i : i + 1600]))
            await asyncio.sleep(0.006)

        async def overflowed() -> bool:
            return stats.get("dropped_frames", 0) > 0 and stats.get("audio_received_s", 0) >= 5

        await wait_for(overflowed, 10.0)  # its frames piled up: the oldest were dropped
        assert max(depths) <= max_pending

        async def cut_off() -> bool:
            return bool(gone)

        await wait_for(cut_off, 10.0)  # then the server gave up on it and freed its slot
        assert piled_up and gone[0] - piled_up[0] < send_timeout_s + 1.0
        await session  # the healthy client was served all along
    finally:
        watcher.cancel()
        ws.transport.abort()

    async def none_left() -> bool:
        return (await health(server))["sessions"] == 0

    await wait_for(none_left)


async def test_idle_client_is_closed_after_idle_timeout(make_server, speech):
    server = await make_server(idle_timeout_s=0.5)
    url = ws_url(server)
    session = asyncio.create_task(healthy(url, speech))  # 20 ms chunks: never idle
    started = time.monotonic()
    received, close_code = await raw_session(url, [hello()])
    assert 0.4 <= time.monotonic() - started < 3.0
    assert isinstance(received[0], wire.Ready)
    assert (error_of(received), close_code) == ("idle_timeout", 1001)
    await session


async def test_an_inference_failure_is_internal_1011_and_the_server_goes_on(
        make_server, speech, tiny_model, monkeypatch):
    real_step = tiny_model.stream_step
    failures = {"left": 1}

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("simulated device error")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "stream_step", fails_once)
    server = await make_server()
    url = ws_url(server)
    with pytest.raises(ClientError) as info:
        await stream_file(url, speech.audio16, 16000, StreamOptions(realtime=False))
    assert (info.value.code, info.value.close_code) == ("internal", 1011)
    assert "simulated" not in str(info.value)  # the client learns nothing of the insides
    result = await stream_file(url, speech.audio16, 16000, StreamOptions(realtime=False))
    assert_complete(result, expected_frames(speech.audio16.size, 16000))


# ------------------------------------------------------------------------------ HTTP
async def test_http_serves_viewer_files_health_and_nothing_else(make_server, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>viewer</title>")
    (tmp_path / "app.js").write_text("export {};")
    server = await make_server(web_root=tmp_path)
    status, headers, body = await http_get(server.port, "/")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert body == b"<!doctype html><title>viewer</title>"
    status, headers, _ = await http_get(server.port, "/app.js")
    assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    for path in ("/missing.html", "/../pyproject.toml", "/%2e%2e/pyproject.toml",
                 "/assets/../../pyproject.toml", "/ws/../pyproject.toml"):
        status, _, _ = await http_get(server.port, path)
        assert status == 404, path
    body = await health(server)
    assert body["status"] == "ok" and body["sessions"] == 0
    assert body["identities"] == ["alice", "bob"]


async def test_http_root_serves_the_shipped_viewer(make_server):
    server = await make_server()
    status, headers, body = await http_get(server.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<html" in body.lower() or b"<!doctype" in body.lower()


async def test_origin_check(make_server):
    server = await make_server()
    url = ws_url(server)
    with pytest.raises(InvalidStatus) as info:
        await connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{server.port}", None):  # same host, or not a browser
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send(hello())
            msg = wire.decode(await ws.recv(), direction="to_client")
            assert isinstance(msg, wire.Ready)
    listed = await make_server(allow_origins=("https://app.example",))
    async with connect(ws_url(listed), origin="https://app.example"):  # type: ignore[arg-type]
        pass
    with pytest.raises(InvalidStatus):
        await connect(ws_url(listed), origin="https://other.example")  # type: ignore[arg-type]
    anyone = await make_server(allow_origins=("*",))
    async with connect(ws_url(anyone), origin="http://evil.example"):  # type: ignore[arg-type]
        pass


async def test_coefficient_frames_carry_the_models_coefficients_in_a_few_hundred_bytes(
        make_server, speech, tiny_model):
    server = await make_server(seed=40)
    audio16 = speech.audio16
    chunks = [audio(audio16[i:i + 8000], "pcm_f32le") for i in range(0, audio16.size, 8000)]
    received, close_code = await raw_session(
        ws_url(server), [hello(format="coeffs", encoding="pcm_f32le"), *chunks,
                         wire.encode(wire.End())], timeout_s=30.0)
    assert close_code == 1000, error_of(received)
    ready = received[0]
    assert isinstance(ready, wire.Ready) and ready.basis is not None
    contract = tiny_model.contract
    assert ready.basis.names == contract.basis.names
    assert ready.basis.vectors is None  # the facecap head's own blendshapes: the viewer has them
    assert ready.lookahead_ms == pytest.approx(contract.lookahead_s * 1000, abs=1e-3)
    frames = [m for m in received if isinstance(m, wire.Frame)]
    assert [f.seq for f in frames] == list(range(expected_frames(audio16.size, 16000)))
    assert all(f.vertices is None and f.weights is None for f in frames)
    streamed = np.stack([np.frombuffer(f.coeffs or b"", "<f2") for f in frames])
    offline = tiny_model.generate(audio16, identity="alice", seed=41)
    np.testing.assert_allclose(streamed, offline, atol=2e-3, rtol=2e-3)  # f16 on the wire
    sizes = [len(wire.encode(f)) for f in frames]
    assert max(sizes) < 200  # vs ~16 KB of f16 vertices
    assert max(sizes) * contract.fps < 10 * 1024  # well under 10 KiB/s


async def test_a_basis_the_viewer_does_not_have_travels_in_ready(make_server, tmp_path):
    server = await make_server(assets_root=tmp_path)  # no facecap.glb served
    async with connect(ws_url(server), max_size=None) as ws:
        await ws.send(hello(format="coeffs"))
        ready = wire.decode(await asyncio.wait_for(ws.recv(), 5.0), direction="to_client")
    assert isinstance(ready, wire.Ready) and ready.basis is not None
    basis = server.contract.basis
    vectors = np.frombuffer(ready.basis.vectors or b"", "<f2").reshape(basis.vectors.shape)
    np.testing.assert_allclose(vectors, basis.vectors, atol=1e-3, rtol=1e-3)
