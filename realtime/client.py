"""Protocol v1 clients: stream a file (paced like a microphone, or as fast as possible; over the
WebSocket or as a WebRTC audio track) or a live microphone to a server and collect the frames with
their latency.

Used by ``talker stream``, ``talker mic``, the tests and the benchmarks. Client-side motion
latency of a frame = (time it was received) - (time the audio sample at its ``t`` was sent).
Frames come as vertices (format "f16" / "f32") or as the model's coefficients (format "coeffs",
protocol v1.1: K float16 a frame, in ``ready.basis.names`` order); the result keeps what came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from models.errors import UserError
from realtime import messages as wire
from realtime.audio import encode_pcm
from realtime.metrics import SendClock, percentile

log = logging.getLogger("talker.client")


FALLBACK_RATE_HZ = 16000  # files at rates protocol v1 cannot carry are sent at this rate


class ClientError(UserError):
    """The server refused or failed the stream; ``code`` is the protocol error code if any."""

    def __init__(self, message: str, code: str | None = None, close_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.close_code = close_code


@dataclass(frozen=True)
class StreamOptions:
    identity: str | None = None  # None: the server's default; "auto": picked from the audio
    realtime: bool = True  # pace chunks like a microphone; False: as fast as possible
    chunk_s: float = 0.02  # 20 ms, what a browser or sounddevice delivers
    encoding: str = "pcm_s16le"
    format: str = "f16"  # "f16" | "f32": vertex frames; "coeffs": coefficient frames (~1/100 size)
    weights: bool = False  # ARKit weights in vertex frames (ignored with "coeffs")
    token: str | None = None
    # Keep every frame's vertices (V*3*4 bytes a frame) or coefficients (K*4 bytes a frame).
    keep_vertices: bool = True
    open_timeout_s: float = 10.0
    # For wss:// servers whose certificate the system does not trust (e.g. self-signed):
    # ``ssl.create_default_context(cafile=...)``. None: the system's CAs.
    ssl_context: ssl.SSLContext | None = None


@dataclass
class StreamResult:
    ready: wire.Ready | None = None
    seq: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    server_latency_ms: list[float] = field(default_factory=list)
    client_latency_ms: list[float] = field(default_factory=list)
    received_s: list[float] = field(default_factory=list)
    vertices: list[np.ndarray] = field(default_factory=list)  # (V, 3) f32 per vertex frame
    coeffs: list[np.ndarray] = field(default_factory=list)  # (K,) f32 per coefficient frame
    weights: list[np.ndarray] = field(default_factory=list)
    stats: list[wire.Stats] = field(default_factory=list)
    end_frames: int | None = None
    error: wire.Error | None = None
    close_code: int | None = None
    audio_s: float = 0.0
    wall_s: float = 0.0
    ready_bytes: int = 0  # size of the `ready` message (the mesh, and the basis when asked)
    # (time.monotonic(), size) of every message received after `ready`
    message_bytes: list[tuple[float, int]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.seq)

    @property
    def gaps(self) -> int:
        """Frames missing from the seq numbers (dropped by the server or lost)."""
        if not self.seq:
            return 0
        return int(self.seq[-1] + 1 - len(self.seq))

    @property
    def bytes_per_s(self) -> float | None:
        """Bytes received per second while streaming: every message after `ready` (frames,
        stats, end; WebSocket framing not counted), over the time from the first to the last
        of them; None before two messages came."""
        if len(self.message_bytes) < 2:
            return None
        span = self.message_bytes[-1][0] - self.message_bytes[0][0]
        total = sum(size for _, size in self.message_bytes[1:])  # bytes that came in the span
        return total / span if span > 0 else None

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(percentile(values, q), 2) if values else None

        span = (self.received_s[-1] - self.received_s[0]) if len(self.received_s) > 1 else 0.0
        last = self.stats[-1] if self.stats else None
        return {
            "frames": self.frames,
            "end_frames": self.end_frames,
            "gaps": self.gaps,
            "dropped_frames": last.dropped_frames if last else None,
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
            "fps": round((self.frames - 1) / span, 2) if span > 0 else None,
            "bytes_per_s": round(self.bytes_per_s) if self.bytes_per_s is not None else None,
            "ready_bytes": self.ready_bytes,
            "server_latency_ms": {q: pct(self.server_latency_ms, v)
                                  for q, v in (("p50", 50), ("p95", 95), ("p99", 99))},
            "client_latency_ms": {q: pct(self.client_latency_ms, v)
                                  for q, v in (("p50", 50), ("p95", 95), ("p99", 99))},
        }

    def save_npz(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "seq": np.asarray(self.seq, dtype=np.int64),
            "t": np.asarray(self.t, dtype=np.float64),
            "server_latency_ms": np.asarray(self.server_latency_ms, dtype=np.float32),
            "client_latency_ms": np.asarray(self.client_latency_ms, dtype=np.float32),
        }
        if self.vertices:
            arrays["vertices"] = np.stack(self.vertices).astype(np.float32)
        if self.coeffs:
            arrays["coeffs"] = np.stack(self.coeffs).astype(np.float32)  # (T, K)
        basis = self.ready.basis if self.ready is not None else None
        if basis is not None:
            arrays["names"] = np.asarray(basis.names)  # the coefficients' names, in order
            if basis.vectors is not None:  # else the facecap head's own blendshapes
                arrays["vectors"] = np.frombuffer(basis.vectors, "<f2").astype(
                    np.float32).reshape(len(basis.names), -1, 3)
        if self.weights:
            arrays["weights"] = np.stack(self.weights).astype(np.float32)
        if self.ready is not None:
            arrays["template"] = np.frombuffer(self.ready.mesh.template, "<f4").reshape(-1, 3)
            arrays["faces"] = np.frombuffer(self.ready.mesh.faces, "<u4").reshape(-1, 3)
            arrays["blendshapes"] = np.asarray(self.ready.blendshapes)
        np.savez_compressed(path, **arrays)


# Unsent bytes the kernel may hold for the socket. The server reads a client's audio no faster
# than real time plus a few seconds (backpressure); without this bound, a file sent --fast
# piles megabytes into the socket and the keepalive pings queue behind them until the
# connection times out. 16 KiB keeps a ping a few milliseconds from the wire.
NOTSENT_LOWAT_BYTES = 16 * 1024


def _limit_unsent(ws: ClientConnection) -> None:
    sock = ws.transport.get_extra_info("socket")
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS
    if sock is not None and option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, NOTSENT_LOWAT_BYTES)


async def open_session(url: str, options: StreamOptions, sample_rate: int,
                       audio: str = "ws") -> tuple[ClientConnection, wire.Ready]:
    """Connect, send hello, wait for ready; raise ClientError with the server's reason."""
    try:
        # wss:// takes a context (True: the system's CAs); ws:// refuses any ssl argument
        tls: ssl.SSLContext | bool | None = None
        if url.startswith("wss:"):
            tls = options.ssl_context or True
        ws = await asyncio.wait_for(connect(url, max_size=None, compression=None, ssl=tls),
                                    options.open_timeout_s)
    except InvalidStatus as exc:
        status = exc.response.status_code
        detail = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        raise ClientError(f"{url} refused the WebSocket (HTTP {status}"
                          + (f": {detail})" if detail else ")")) from exc
    except ConnectionRefusedError as exc:
        raise ClientError(f"cannot connect to {url}: connection refused "
                          "(is `talker serve` running there?)") from exc
    except TimeoutError as exc:
        raise ClientError(f"cannot connect to {url}: no answer within "
                          f"{options.open_timeout_s:g} s") from exc
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise ClientError(f"cannot connect to {url}: {exc}") from exc
    _limit_unsent(ws)
    hello = wire.Hello(sample_rate=sample_rate, encoding=options.encoding, audio=audio,
                        identity=options.identity, format=options.format,
                        weights=options.weights, token=options.token)
    try:
        await ws.send(wire.encode(hello))
        data = await ws.recv()
    except ConnectionClosed as exc:
        raise ClientError(f"server closed the connection: {exc}",
                          close_code=exc.rcvd.code if exc.rcvd else None) from exc
    if isinstance(data, str):
        await ws.close()
        raise ClientError("server sent a text message; protocol v1 is binary")
    msg = wire.decode(data, direction="to_client")
    if isinstance(msg, wire.Error):
        code = ws.close_code
        with contextlib.suppress(Exception):
            await ws.wait_closed()
            code = ws.close_code
        raise ClientError(f"server refused the session: {msg.code}: {msg.message}",
                          code=msg.code, close_code=code)
    if not isinstance(msg, wire.Ready):
        await ws.close()
        raise ClientError(f"expected 'ready' from the server, got {msg.type!r}")
    return ws, msg


def _take(msg: wire.Message, result: StreamResult, clock: SendClock, options: StreamOptions,
          size: int) -> None:
    """Record one message received after `ready` (``size`` bytes)."""
    now = time.monotonic()
    result.message_bytes.append((now, size))
    if isinstance(msg, wire.Frame):
        result.seq.append(msg.seq)
        result.t.append(msg.t)
        result.server_latency_ms.append(msg.latency_ms)
        result.received_s.append(now)
        sent = clock.sent_at(msg.t)
        if sent is not None:
            result.client_latency_ms.append((now - sent) * 1000.0)
        if options.keep_vertices:
            _keep_frame(msg, result, options)
        if msg.weights is not None:
            result.weights.append(np.frombuffer(msg.weights, "<f4").copy())
    elif isinstance(msg, wire.Stats):
        result.stats.append(msg)
    elif isinstance(msg, wire.ServerEnd):
        result.end_frames = msg.frames
    elif isinstance(msg, wire.Error):
        result.error = msg


def _keep_frame(msg: wire.Frame, result: StreamResult, options: StreamOptions) -> None:
    """Store the frame's vertices or coefficients; ClientError when it is not what the hello
    asked for (a coefficient frame for a vertex format, or the wrong size)."""
    assert result.ready is not None
    basis = result.ready.basis
    if options.format == "coeffs":
        if msg.coeffs is None or basis is None:
            raise ClientError("asked for coefficient frames (format 'coeffs') but the server sent "
                              + ("vertices" if msg.coeffs is None else "no basis in 'ready'"))
        coeffs = np.frombuffer(msg.coeffs, "<f2")
        if coeffs.size != len(basis.names):
            raise ClientError(f"frame {msg.seq}: {coeffs.size} coefficients, but 'ready.basis' "
                              f"names {len(basis.names)}")
        result.coeffs.append(coeffs.astype(np.float32))
        return
    vertex_count = result.ready.mesh.vertex_count
    dtype = "<f2" if options.format == "f16" else "<f4"
    if msg.vertices is None or len(msg.vertices) != vertex_count * 3 * np.dtype(dtype).itemsize:
        got = "coefficients" if msg.vertices is None else f"{len(msg.vertices)} bytes"
        raise ClientError(f"frame {msg.seq}: expected {vertex_count}*3 {options.format} vertices, "
                          f"got {got}")
    result.vertices.append(
        np.frombuffer(msg.vertices, dtype).astype(np.float32).reshape(vertex_count, 3))


async def _receive_all(ws: ClientConnection, result: StreamResult, clock: SendClock,
                       options: StreamOptions, on_frame: Callable[[StreamResult], None] | None,
                       on_answer: Callable[[str], Awaitable[None]] | None = None) -> None:
    assert result.ready is not None
    try:
        async for data in ws:
            if isinstance(data, str):
                raise ClientError("server sent a text message; protocol v1 is binary")
            msg = wire.decode(data, direction="to_client")
            if isinstance(msg, wire.Answer) and on_answer is not None:
                await on_answer(msg.sdp)
                continue
            _take(msg, result, clock, options, len(data))
            if on_frame is not None and isinstance(msg, wire.Frame):
                on_frame(result)
    except ConnectionClosed:
        pass
    result.close_code = ws.close_code


async def _send_chunks(ws: ClientConnection, chunks: AsyncIterator[np.ndarray], sample_rate: int,
                       clock: SendClock, options: StreamOptions, result: StreamResult) -> None:
    sent = 0
    async for chunk in chunks:
        clock.record(sent / sample_rate, time.monotonic())
        await ws.send(wire.encode(wire.Audio(data=encode_pcm(chunk, options.encoding))))
        sent += chunk.size
        result.audio_s = sent / sample_rate
    await ws.send(wire.encode(wire.End()))


async def file_chunks(audio: np.ndarray, sample_rate: int, options: StreamOptions,
                      ) -> AsyncIterator[np.ndarray]:
    """Yield ``chunk_s`` pieces, paced in real time when ``options.realtime``."""
    step = max(1, int(round(options.chunk_s * sample_rate)))
    if not options.realtime:
        step = sample_rate // 2  # half a second a message: well under the 1 s limit
    start = time.monotonic()
    for i in range(0, audio.size, step):
        if options.realtime:
            due = start + i / sample_rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        yield audio[i : i + step]


async def stream_audio(url: str, chunks: AsyncIterator[np.ndarray], sample_rate: int,
                       options: StreamOptions = StreamOptions(),
                       on_frame: Callable[[StreamResult], None] | None = None) -> StreamResult:
    """Run one whole session: hello, audio chunks, end; return every frame received."""
    ws, ready = await open_session(url, options, sample_rate)
    result = StreamResult(ready=ready, ready_bytes=_size(ready))
    clock = SendClock()
    started = time.monotonic()
    receiver = asyncio.create_task(_receive_all(ws, result, clock, options, on_frame))
    sender = asyncio.create_task(_send_chunks(ws, chunks, sample_rate, clock, options, result))
    try:
        done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done and sender.exception() is None:
            await receiver
        elif sender in done and not isinstance(sender.exception(), ConnectionClosed):
            raise sender.exception()  # type: ignore[misc]
        else:
            await receiver
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        await ws.close()
    result.wall_s = time.monotonic() - started
    return _finished(result)


def _size(ready: wire.Ready) -> int:
    """Bytes of the `ready` message as received (its canonical encoding, which servers send)."""
    return len(wire.encode(ready))


def _finished(result: StreamResult) -> StreamResult:
    """The result of a session that ended, or ClientError saying how it did not."""
    if result.error is not None:
        raise ClientError(f"server error {result.error.code}: {result.error.message}",
                          code=result.error.code, close_code=result.close_code)
    if result.end_frames is None:
        raise ClientError(f"the connection closed before the server's 'end' (close code "
                          f"{result.close_code}) after {result.frames} frames",
                          close_code=result.close_code)
    return result


async def stream_file(url: str, audio: np.ndarray, sample_rate: int,
                      options: StreamOptions = StreamOptions(),
                      on_frame: Callable[[StreamResult], None] | None = None) -> StreamResult:
    audio = np.asarray(audio, dtype=np.float32)
    return await stream_audio(url, file_chunks(audio, sample_rate, options), sample_rate,
                              options, on_frame)


async def stream_file_webrtc(url: str, audio: np.ndarray, sample_rate: int,
                             options: StreamOptions = StreamOptions(),
                             on_frame: Callable[[StreamResult], None] | None = None,
                             ) -> StreamResult:
    """One whole session with the audio as a WebRTC track (what a browser or a WebRTC peer
    sends): hello with audio "webrtc", SDP offer/answer over the WebSocket, the file played in
    real time as 48 kHz 20-ms frames, then the track ends (RTCP BYE), which ends the stream.
    Frames come back over the WebSocket as usual. Host candidates only (no STUN/TURN)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from realtime.audio import resample
    from realtime.webrtc import RTC_RATE_HZ, PacedAudioTrack

    audio = np.asarray(audio, dtype=np.float32)
    track = PacedAudioTrack(resample(audio, sample_rate, RTC_RATE_HZ))
    ws, ready = await open_session(url, options, RTC_RATE_HZ, audio="webrtc")
    result = StreamResult(ready=ready, audio_s=audio.size / sample_rate, ready_bytes=_size(ready))
    started = time.monotonic()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender = pc.addTrack(track)
    stopper: asyncio.Task[None] | None = None

    async def stop_when_played() -> None:
        await track.done.wait()
        await asyncio.sleep(0.3)  # let the last packets land
        await sender.stop()  # RTCP BYE: the server ends the stream as after an `end`

    async def on_answer(sdp: str) -> None:
        nonlocal stopper
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        stopper = asyncio.create_task(stop_when_played())

    try:
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send(wire.encode(wire.Offer(sdp=pc.localDescription.sdp)))
        await _receive_all(ws, result, track.clock, options, on_frame, on_answer)
    finally:
        if stopper is not None:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        await pc.close()
        await ws.close()
    result.wall_s = time.monotonic() - started
    return _finished(result)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of an audio file a client may stream (``models.audio``:
    channels averaged). A rate that protocol v1 cannot carry (outside 8000..48000 Hz, or not a
    multiple of 25 Hz, e.g. 96 kHz) is resampled here to 16 kHz. ``DataError`` for a missing or
    unreadable file, ``ClientError`` for a file without audio."""
    from models.audio import read_wav as read_audio
    from models.audio import resample

    data, rate = read_audio(path)
    if data.size == 0:
        raise ClientError(f"{path} holds no audio")
    carried = (wire.MIN_SAMPLE_RATE_HZ <= rate <= wire.MAX_SAMPLE_RATE_HZ
               and rate % wire.SAMPLE_RATE_STEP_HZ == 0)
    if not carried:
        log.info("%s: %d Hz is not a protocol v1 rate; resampled to %d Hz", path, rate,
                 FALLBACK_RATE_HZ)
        data, rate = resample(data, rate, FALLBACK_RATE_HZ), FALLBACK_RATE_HZ
    return data, rate
