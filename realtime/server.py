"""``talker serve``: one port for the viewer (GET), ``/health``, ``/metrics`` and the WebSocket
``/ws``, over TLS when given a certificate (https:// and wss://).

The WebSocket adapter is thin glue around three pieces: :class:`realtime.protocol.ServerProtocol`
(parses and checks messages), :class:`realtime.session.Session` (audio, hops, frames, drops) and
:class:`realtime.engine.InferenceEngine` (batched torch off the event loop). Each connection owns
three tasks: the reader (messages in, control first), the pump (ready hops to the engine and back)
and the sender (frames and stats out). A slow reader only ever loses its own oldest frames; a
client that takes nothing for ``send_timeout_s`` is cut off. Who gets a connection and a session
slot is :class:`realtime.admission.Admission`'s policy (PROTOCOL.md, "Limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from models.errors import ConfigError, UserError
from models.face.load import load_rig
from models.face.rig import ARKIT_NAMES
from realtime import messages as wire
from realtime.admission import Admission, AdmissionConfig, LogBudget, Ticket
from realtime.audio import bytes_per_sample
from realtime.engine import (
    EngineConfig,
    EngineError,
    HopJob,
    IdentityMix,
    InferenceEngine,
    StreamingModel,
)
from realtime.errors import CloseCode, ProtocolError
from realtime.prometheus import CONTENT_TYPE, ServerMetrics, Snapshot
from realtime.protocol import (
    AudioReceived,
    Event,
    ServerProtocol,
    ServerProtocolConfig,
    ServerState,
)
from realtime.session import (
    AUTO_IDENTITY,
    MEAN_IDENTITY,
    HopRequest,
    OutFrame,
    Session,
    SessionConfig,
)
from realtime.static import (
    ALLOWED_METHODS,
    OriginPolicy,
    ViewerFiles,
    authorized,
    bad_request,
    decode_path,
    head_only,
    json_response,
    method_not_allowed,
    response,
    text_response,
    unauthorized,
)
from realtime.webrtc import IcePolicy, WebRtcIngest

log = logging.getLogger("talker.server")

REPO_ROOT = Path(__file__).resolve().parent.parent
# Most bytes a connection may hold that its peer has not taken before the server stops reading
# from it (see _BoundedPongs): far above what streaming frames leave there (the transport's
# 32 KiB high-water mark plus one frame), far below what a ping flood would make of it.
MAX_UNSENT_BYTES = 1 << 20


def _pick_identity(model: Any, audio: np.ndarray) -> tuple[int, Any]:
    """Identity "auto" on the inference worker (module level: it may run in its process)."""
    index, scores = model.pick_identity(audio)
    return int(index), scores


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # required in hello when set (else close 1008)
    # Sessions (accepted hellos, token checked) at once; more get `server_full` and close 1013.
    # An open socket that has not said hello takes no slot (see `admission`).
    max_sessions: int = 32
    # Browser origins allowed to open /ws besides the server's own (its bound address on its
    # port; never the request's Host header: DNS rebinding). "*" allows any. No Origin header
    # (non-browser clients) is always allowed. See realtime.static.OriginPolicy.
    allow_origins: tuple[str, ...] = ()
    # TLS: serve https:// and wss:// (browsers give the microphone only to localhost or HTTPS).
    # PEM files; keyfile may be left out when certfile holds the key too.
    certfile: Path | None = None
    keyfile: Path | None = None
    # WebRTC media: the address to bind and advertise (None: `host`), and the public address to
    # advertise instead behind a 1:1 NAT (see realtime.webrtc.IcePolicy).
    webrtc_host: str | None = None
    webrtc_public_ip: str | None = None
    max_message_bytes: int = 256 * 1024  # a second of 48 kHz f32 audio fits with room to spare
    idle_timeout_s: float = 30.0  # no message for this long closes the session (1001)
    # A new connection must send an accepted hello this soon (else `hello_timeout`, 1008).
    hello_timeout_s: float = 5.0
    # Longest wait for a client to take one message, or the close: a peer whose socket stays
    # full this long has stopped reading; it is cut off (no close handshake) and its slot freed.
    send_timeout_s: float = 5.0
    # Connections per client address and before hello, wrong-token back-off (realtime.admission)
    admission: AdmissionConfig = AdmissionConfig()
    stats_interval_s: float = 1.0
    web_root: Path = REPO_ROOT / "web_client"
    assets_root: Path = REPO_ROOT / "assets"
    # Base of the per-session noise seeds. The n-th session whose hello is accepted since the
    # server started (n = 1, 2, ...) uses seed + n: two sessions differ, and a session is
    # reproducible offline with `Talker.generate(audio, identity, seed=seed + n)`.
    seed: int = 0


@dataclass
class _Connection:
    """Per-connection state owned by the handler's tasks."""

    ws: ServerConnection
    protocol: ServerProtocol
    session_id: str
    address: str = ""  # the client's IP address (admission caps and back-off count by it)
    ticket: Ticket | None = None  # its standing with the server's Admission
    seed: int = 0  # the engine stream's noise seed (ServerConfig.seed + n)
    session: Session | None = None
    webrtc: WebRtcIngest | None = None
    hello: wire.Hello | None = None
    wake_pump: asyncio.Event = field(default_factory=asyncio.Event)
    wake_sender: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    started_s: float = field(default_factory=time.monotonic)
    # Last sign of life from the client: a message, or WebRTC audio (which bypasses /ws).
    last_activity_s: float = field(default_factory=time.monotonic)
    frames_sent: int = 0
    helpers: set[asyncio.Task[None]] = field(default_factory=set)  # e.g. identity picking
    # One flush at a time (reader and sender): what one task drained before an `error` was
    # queued never goes out after it.
    flushing: asyncio.Lock = field(default_factory=asyncio.Lock)


class TalkerServer:
    def __init__(
        self,
        model: StreamingModel,
        config: ServerConfig = ServerConfig(),
        session_config: SessionConfig | None = None,
        engine_config: EngineConfig | None = None,
    ) -> None:
        """``session_config`` defaults to what the model's contract dictates; one given must
        agree with it on the rates and the look-ahead."""
        self.model = model
        self.contract = model.contract
        self.config = config
        self.session_config = session_config or SessionConfig.for_model(self.contract)
        self.engine = InferenceEngine(model, engine_config or EngineConfig())
        self.files = ViewerFiles.scan(config.web_root, config.assets_root)
        self.ice = IcePolicy.for_host(config.webrtc_host or config.host, config.webrtc_public_ip)
        self.metrics = ServerMetrics(self._snapshot)
        # the server's own origins need its port: set again once bound (start)
        self.origins = OriginPolicy.for_server(config.host, config.port,
                                               config.certfile is not None, config.allow_origins)
        self._connections: dict[str, _Connection] = {}
        self._admission = Admission(config.max_sessions, config.admission)
        self._log_budget = LogBudget()  # lines about failed connections: bounded per second
        self._sessions_started = 0  # hellos accepted: numbers the per-session seeds
        self._server: Server | None = None
        self._template = np.asarray(self.contract.basis.template, np.float32)
        self._ready_msg_parts = self._mesh_parts()
        self._basis_msg = wire.Basis(names=tuple(self.contract.basis.names),
                                     vectors=self._basis_vectors())
        self.started_s = time.monotonic()

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        tls = self._ssl_context()
        self.engine.start()
        self._server = await serve(
            self._serve_connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            ssl=tls,
            max_size=self.config.max_message_bytes + 1024,
            compression=None,  # vertex frames do not compress; deflate only costs CPU
            create_connection=_BoundedPongs,
            ping_interval=20,
            ping_timeout=20,
        )
        self.origins = OriginPolicy.for_server(self.config.host, self.port, tls is not None,
                                               self.config.allow_origins)

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context from ``certfile``/``keyfile``; None without a certificate.
        A missing or unreadable file is a ConfigError that names it."""
        certfile, keyfile = self.config.certfile, self.config.keyfile
        if certfile is None:
            if keyfile is not None:
                raise ConfigError("--keyfile needs --certfile (the certificate it belongs to)")
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificate {certfile} / key {keyfile or certfile}: "
                              f"cannot load it ({exc})") from exc
        return context

    async def _serve_connection(self, ws: ServerConnection) -> None:
        """What websockets runs per connection: :meth:`_handle`, then a refusal counted in the
        metrics. A refusal is a close the server sent with 1008 (policy: token) or 1013 (try
        again later: full, caps), its reason being the error code."""
        try:
            await self._handle(ws)
        finally:
            close = ws.protocol.close_sent
            if close is not None and close.code in (CloseCode.POLICY, CloseCode.TRY_AGAIN_LATER):
                self.metrics.rejected(close.reason or str(close.code))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The viewer's address (https:// with TLS; an IPv6 host in brackets)."""
        scheme = "https" if self.config.certfile is not None else "http"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{scheme}://{host}:{self.port}/"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        self.engine.stop()

    async def serve_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        log.info("serving on %s (WebSocket /ws)", self.url)
        await stop.wait()
        log.info("shutting down: %d open sessions", len(self._connections))
        await self.stop()

    def health(self, details: bool = True) -> dict[str, Any]:
        """``/health``: liveness only (``details`` False: what anyone may see when a token is
        configured), or the sessions, identities, engine and model too."""
        if not details:
            return {"status": "ok"}
        return {
            "status": "ok",
            "sessions": self._admission.sessions,
            "connections": self._admission.connections,
            "max_sessions": self.config.max_sessions,
            "identities": list(self.contract.identities),
            "engine": {
                "queue_depth": self.engine.queue_depth,
                "batches": self.engine.batches_run,
                "hops": self.engine.jobs_run,
                "busy_s": round(self.engine.busy_s, 3),
                "worker": self.engine.config.worker,
                "worker_restarts": self.engine.worker_restarts,
            },
            "uptime_s": round(time.monotonic() - self.started_s, 1),
            "model": getattr(self.model, "describe", lambda: "")(),
        }

    def sessions(self) -> list[dict[str, Any]]:
        """One entry per open connection: id, noise seed and the session's ``stats`` fields
        (``queue_depth`` included); for tests and operators, not served over HTTP."""
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        for conn in self._connections.values():
            entry: dict[str, Any] = {"session": conn.session_id, "seed": conn.seed}
            if conn.session is not None:
                entry.update(conn.session.stats(now))
            out.append(entry)
        return out

    # ------------------------------------------------------------------------------------ HTTP
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """/ws goes on to the WebSocket handshake (its Origin checked); anything else is plain
        HTTP: GET or HEAD of /health, /metrics or a viewer file."""
        path = decode_path(request.path)
        if path == "/ws":
            if not self._origin_ok(request):
                self.metrics.rejected("origin")
                origin = ", ".join(request.headers.get_all("Origin"))
                return text_response(HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed")
            return None
        if "websocket" in (v.lower() for v in request.headers.get_all("Upgrade")):
            return text_response(HTTPStatus.NOT_FOUND, "the WebSocket endpoint is /ws")
        if request.method not in ALLOWED_METHODS:
            return method_not_allowed()
        if path is None:
            answer = bad_request("bad path: not UTF-8, or a control character")
        elif path == "/health":
            answer = self._health_response(request)
        elif path == "/metrics":
            answer = self._metrics_response(request)
        else:
            answer = self.files.serve(path)
        return head_only(answer) if request.method == "HEAD" else answer

    def _origin_ok(self, request: Request) -> bool:
        origins = request.headers.get_all("Origin")  # a browser sends one; two are refused
        return len(origins) <= 1 and self.origins.allows(origins[0] if origins else None)

    def _health_response(self, request: Request) -> Response:
        """With a token configured, the details need ``Authorization: Bearer TOKEN``; without
        credentials the answer is liveness only, with wrong ones 401. Without a token the
        server is open to whoever reaches it (a session's ``ready`` names the identities), and
        the details are everyone's."""
        if authorized(request.headers, self.config.token):
            return json_response(self.health())
        if "Authorization" in request.headers:
            return unauthorized()
        return json_response(self.health(details=False))

    def _metrics_response(self, request: Request) -> Response:
        """Prometheus text format; with a token configured, only for ``Bearer TOKEN``."""
        if not authorized(request.headers, self.config.token):
            return unauthorized()
        return response(HTTPStatus.OK, self.metrics.render(), CONTENT_TYPE)

    def _snapshot(self) -> Snapshot:
        """What /metrics reads at scrape time (the open sessions' counts so far)."""
        open_sessions = [c.session for c in self._connections.values() if c.session is not None]
        return Snapshot(
            connections=len(self._connections),
            sessions=len(open_sessions),
            max_sessions=self.config.max_sessions,
            frames_sent=sum(c.frames_sent for c in self._connections.values()),
            frames_dropped=sum(s.dropped_frames for s in open_sessions),
            engine_busy_s=self.engine.busy_s,
            engine_batches=self.engine.batches_run,
            engine_hops=self.engine.jobs_run,
            engine_queue_depth=self.engine.queue_depth,
            engine_worker_restarts=self.engine.worker_restarts,
        )

    # ------------------------------------------------------------------------------ WebSocket
    async def _handle(self, ws: ServerConnection) -> None:
        now = time.monotonic()
        conn = _Connection(
            ws=ws,
            protocol=ServerProtocol(
                ServerProtocolConfig(
                    token=self.config.token,
                    max_message_bytes=self.config.max_message_bytes,
                    identities=tuple(self.contract.identities),
                    hello_timeout_s=self.config.hello_timeout_s,
                ),
                now,
            ),
            session_id=secrets.token_hex(6),
            address=_address(ws),
        )
        try:
            conn.ticket = self._admission.connect(conn.address, now)
        except ProtocolError as refusal:  # a cap: say so and close, before reading anything
            conn.protocol.fail(refusal)
            with contextlib.suppress(ConnectionClosed, _PeerStalled):
                await self._flush(conn)
            return
        self._connections[conn.session_id] = conn
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks = [
                asyncio.create_task(self._guard(conn, self._reader(conn)),
                                    name=f"{conn.session_id}-reader"),
                asyncio.create_task(self._guard(conn, self._pump(conn)),
                                    name=f"{conn.session_id}-pump"),
                asyncio.create_task(self._guard(conn, self._sender(conn)),
                                    name=f"{conn.session_id}-sender"),
            ]
            await conn.closing.wait()
        finally:
            for task in [*tasks, *conn.helpers]:
                task.cancel()
            await asyncio.gather(*tasks, *conn.helpers, return_exceptions=True)
            await self._close_session(conn)

    async def _guard(self, conn: _Connection, work: Coroutine[Any, Any, None]) -> None:
        """Run one of a connection's tasks; however it ends, the connection closes. A client
        that goes away is routine (no log above debug); anything else is a server fault: the
        client gets ``internal`` and 1011, the log gets the traceback."""
        try:
            await work
        except ConnectionClosed:
            log.debug("session %s: client went away", conn.session_id)
        except _PeerStalled as exc:
            self._log_failure(conn, "client dropped: %s", exc)
        except EngineError as exc:
            log.error("session %s: %s", conn.session_id, exc)
            await self._fail_internal(conn, "inference failed; please reconnect")
        except Exception:
            log.exception("session %s: internal error", conn.session_id)
            await self._fail_internal(conn, "internal server error")
        finally:
            conn.closing.set()

    async def _fail_internal(self, conn: _Connection, message: str) -> None:
        conn.protocol.fail(ProtocolError("internal", message, CloseCode.INTERNAL))
        with contextlib.suppress(ConnectionClosed, _PeerStalled):
            await self._flush(conn)

    async def _reader(self, conn: _Connection) -> None:
        """Messages in, in order; closes when no hello came within ``hello_timeout_s``, and
        after ``idle_timeout_s`` without a message or WebRTC audio (not while the session
        flushes its last frames after ``end``). Reads nothing while the session is too far
        ahead of real time (:meth:`_hold_back`)."""
        idle_limit = self.config.idle_timeout_s
        while True:
            now = time.monotonic()
            conn.protocol.check_deadline(now)  # the hello deadline
            flushing = conn.session is not None and conn.session.ended
            wait_s = idle_limit - (now - conn.last_activity_s)
            if wait_s <= 0 and not flushing:
                conn.protocol.fail(
                    ProtocolError("idle_timeout", f"no message for {idle_limit:g} s", 1001)
                )
            if conn.protocol.close_code is not None:
                await self._flush(conn)
                return
            hello_due = conn.protocol.hello_deadline
            if hello_due is not None:
                wait_s = min(wait_s, hello_due - now)
            try:
                # Cancelling recv() loses no message (websockets' guarantee).
                data = await asyncio.wait_for(conn.ws.recv(), max(wait_s, 0.0) or idle_limit)
            except TimeoutError:
                continue
            now = time.monotonic()
            conn.last_activity_s = now
            self._receive(conn, data, now)
            for event in conn.protocol.events_received():
                await self._on_event(conn, event)
            if not await self._flush(conn):
                return
            await self._hold_back(conn)

    def _receive(self, conn: _Connection, data: bytes | str, now: float) -> None:
        """One message into the protocol; a hello is checked against the address's wrong-token
        back-off first, and a wrong token counts towards it."""
        assert conn.ticket is not None
        if conn.protocol.state is ServerState.AWAITING_HELLO:
            try:
                self._admission.check_hello(conn.ticket, now)
            except ProtocolError as refusal:
                conn.protocol.fail(refusal)
                return
        conn.protocol.receive(data, now)
        failure = conn.protocol.failure
        if failure is not None and failure.code == "bad_token":
            self._admission.token_rejected(conn.ticket, now)

    async def _hold_back(self, conn: _Connection) -> None:
        """Backpressure (Session drop policy 1): while the client is more than ``max_ahead_s``
        ahead of real time, read nothing more from it; its sends block on the full socket."""
        session = conn.session
        if session is None:
            return
        while (delay := session.read_delay_s(time.monotonic())) > 0:
            await asyncio.sleep(delay)
            conn.last_activity_s = time.monotonic()  # held back, not idle

    async def _flush(self, conn: _Connection) -> bool:
        """Send queued protocol output; close when a close is queued. False once closed.
        Raises ConnectionClosed when the client has gone, _PeerStalled when it stopped
        taking data (every send and the close are bounded by ``send_timeout_s``).

        Flushes take turns, and one sends until nothing is queued: while the sender sends the
        frames it drained, the reader may queue an `error`; the error goes out after those
        frames, nothing follows it, and the close never overtakes it. With nothing to send, a
        flush does not wait for its turn (the reader goes on reading while the sender waits on
        a client slow to take its frames)."""
        if not conn.protocol.has_data_to_send and conn.protocol.close_code is None:
            return True
        async with conn.flushing:
            if conn.closing.is_set():
                return False
            while queued := conn.protocol.data_to_send():
                for data in queued:
                    await self._bounded(conn, conn.ws.send(data))
            if conn.protocol.close_code is not None:
                failure = conn.protocol.failure
                reason = failure.code if failure is not None else ""
                if failure is not None and failure.code != "server_full":
                    self._log_failure(conn, "closing %d (%s)", conn.protocol.close_code,
                                      failure.message)
                await self._bounded(conn, conn.ws.close(conn.protocol.close_code, reason))
                conn.closing.set()
                return False
            return True

    async def _bounded(self, conn: _Connection, op: Coroutine[Any, Any, None]) -> None:
        """Await one send or the close for at most ``send_timeout_s``. A client that takes
        nothing for that long is cut off (transport aborted: no close handshake, its socket
        buffers are dropped) and the connection ends with _PeerStalled."""
        try:
            await asyncio.wait_for(op, self.config.send_timeout_s)
        except TimeoutError:
            conn.ws.transport.abort()
            conn.closing.set()
            raise _PeerStalled(
                f"took no data for {self.config.send_timeout_s:g} s") from None

    def _log_failure(self, conn: _Connection, fmt: str, *args: object) -> None:
        """One INFO line about a failed connection, within the server's log budget (a client
        reconnecting in a loop cannot flood the log); lines left out are counted in the next."""
        if not self._log_budget.allow(time.monotonic()):
            return
        left_out = self._log_budget.take_suppressed()
        line = (fmt % args)[:300]
        suffix = f" ({left_out} similar lines left out)" if left_out else ""
        log.info("session %s: %s%s", conn.session_id, line, suffix)

    async def _on_event(self, conn: _Connection, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, wire.Hello):
            self._on_hello(conn, event)
            return
        session = conn.session
        assert session is not None
        if isinstance(event, AudioReceived):
            self._feed(conn, event.samples, event.sample_rate_hz)
        elif isinstance(event, wire.Interrupt):
            session.interrupt(now)
        elif isinstance(event, wire.Identity):
            session.set_identity(event.identity, now)
        elif isinstance(event, wire.End):
            self._end_audio(conn)
        elif isinstance(event, wire.Offer):
            await self._on_offer(conn, event)
        conn.wake_pump.set()

    def _on_hello(self, conn: _Connection, hello: wire.Hello) -> None:
        assert conn.ticket is not None
        try:
            self._admission.start_session(conn.ticket)  # a slot only now, token checked
        except ProtocolError as refusal:
            conn.protocol.fail(refusal)
            return
        conn.hello = hello
        _limit_receive_buffer(conn.ws, hello)
        self._sessions_started += 1
        conn.seed = self.config.seed + self._sessions_started
        identities = list(self.contract.identities)
        default = identities[0] if identities else MEAN_IDENTITY
        conn.session = Session(self.session_config, hello.identity or default)
        self.engine.open_stream(conn.session_id, conn.seed)
        template, faces, vertex_count, names = self._ready_msg_parts
        conn.protocol.send(
            wire.Ready(
                session=conn.session_id,
                fps=self.session_config.fps,
                identities=tuple(identities),
                identity=AUTO_IDENTITY if conn.session.auto_identity_pending
                else conn.session.identity,
                mesh=wire.Mesh(vertex_count=vertex_count, template=template, faces=faces),
                blendshapes=names,
                lookahead_ms=round(self.contract.lookahead_s * 1000.0, 3),
                basis=self._basis_msg if hello.format == "coeffs" else None,
            )
        )
        log.info(
            "session %s start: audio=%s rate=%d identity=%s format=%s seed=%d",
            conn.session_id, hello.audio, hello.sample_rate, hello.identity, hello.format,
            conn.seed,
        )

    def _feed(self, conn: _Connection, samples: np.ndarray, rate: int) -> None:
        session = conn.session
        if session is None or session.ended:
            return
        now = time.monotonic()
        conn.last_activity_s = now
        session.feed_audio(samples, now, rate)
        pick_audio = session.identity_pick_audio()
        if pick_audio is not None:
            task = asyncio.get_running_loop().create_task(
                self._pick_identity(conn, session, pick_audio))
            conn.helpers.add(task)
            task.add_done_callback(conn.helpers.discard)
        conn.wake_pump.set()

    async def _pick_identity(self, conn: _Connection, session: Session,
                             audio: np.ndarray) -> None:
        """Identity "auto": the model picks on the inference worker; the session blends."""
        name: str | None = None
        try:
            index, _scores = await self.engine.call(_pick_identity, audio)
            name = str(self.contract.identities[int(index)])
            log.info("session %s: auto identity -> %s", conn.session_id, name)
        except EngineError as exc:  # keep the mean identity; the stream goes on
            log.warning("session %s: auto identity failed: %s", conn.session_id, exc)
        session.identity_picked(name, time.monotonic())
        conn.wake_pump.set()

    def _end_audio(self, conn: _Connection) -> None:
        if conn.session is not None:
            conn.session.end(time.monotonic())

    async def _on_offer(self, conn: _Connection, offer: wire.Offer) -> None:
        def sink(samples: np.ndarray, rate: int) -> None:
            self._feed(conn, samples, rate)

        def ended() -> None:  # the track ended (RTCP BYE): the same as an `end` message
            if not conn.closing.is_set():
                self._end_audio(conn)
                conn.wake_pump.set()

        conn.webrtc = WebRtcIngest(sink, on_ended=ended, ice=self.ice)
        try:
            answer = await conn.webrtc.accept_offer(offer.sdp)
        except ProtocolError as exc:
            conn.protocol.fail(exc)
            return
        conn.protocol.send(wire.Answer(sdp=answer))

    async def _pump(self, conn: _Connection) -> None:
        """Ready hops -> engine -> session, one hop in flight per session (the model's state
        chains a session's hops; the engine batches across sessions)."""
        while True:
            await conn.wake_pump.wait()
            conn.wake_pump.clear()
            session = conn.session
            if session is None:
                continue
            hint = self.engine.hop_frames_hint
            for request in session.ready_hops(time.monotonic(), hint):
                result = await self.engine.submit(self._job(conn, request))
                session.complete_hop(request.request_id, result.coeffs, time.monotonic(),
                                     result.offsets)
                conn.wake_sender.set()
                conn.wake_pump.set()  # more hops may be ready now
            if session.ended:
                conn.wake_sender.set()

    def _job(self, conn: _Connection, request: HopRequest) -> HopJob:
        first = request.identity[0]
        return HopJob(
            stream_id=conn.session_id,
            samples=request.samples[: request.samples.size - request.padding_samples],
            n_frames=request.n_frames,
            identity=IdentityMix(
                source=first.from_identity,
                target=request.identity[-1].to_identity,
                alpha=np.array([b.alpha for b in request.identity], dtype=np.float32),
            ),
            reset=request.reset_state,
            final=request.padding_samples > 0,
            want_offsets=conn.hello is not None and conn.hello.format != "coeffs",
        )

    async def _sender(self, conn: _Connection) -> None:
        next_stats = time.monotonic() + self.config.stats_interval_s
        while True:
            timeout = max(0.0, next_stats - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.wake_sender.wait(), timeout)
            conn.wake_sender.clear()
            session, hello = conn.session, conn.hello
            if session is None or hello is None:
                next_stats = time.monotonic() + self.config.stats_interval_s
                continue
            now = time.monotonic()
            frames = session.drain_frames(now)
            for frame in frames:
                conn.protocol.send(self._frame_message(frame, hello))
            conn.frames_sent += len(frames)
            if now >= next_stats:
                conn.protocol.send(wire.Stats(**session.stats(now)))
                next_stats = now + self.config.stats_interval_s
            if session.finished:
                conn.protocol.finish(conn.frames_sent)
            if not await self._flush(conn):
                return

    def _frame_message(self, frame: OutFrame, hello: wire.Hello) -> wire.Frame:
        """A coefficient frame (f16), or a vertex frame from the offsets the inference worker
        decoded (template + offsets, in the hello's float format)."""
        latency_ms = max(0.0, frame.latency_ms)
        self.metrics.frame_sent(latency_ms)
        if hello.format == "coeffs":
            return wire.Frame(seq=frame.seq, t=frame.t, latency_ms=latency_ms,
                              coeffs=frame.coeffs.astype("<f2").tobytes())
        offsets = frame.offsets
        if offsets is None:  # not decoded by the worker (e.g. eased frames before any hop)
            offsets = self.contract.basis.decode(frame.coeffs) - self._template
        vertices = (self._template + offsets).astype("<f2" if hello.format == "f16" else "<f4")
        weights = None
        if hello.weights and self._weights_index is not None:
            full = np.zeros(len(self._ready_msg_parts[3]), dtype="<f4")
            full[self._weights_index] = frame.coeffs
            weights = full.tobytes()
        return wire.Frame(
            seq=frame.seq,
            t=frame.t,
            vertices=vertices.tobytes(),
            weights=weights,
            latency_ms=latency_ms,
        )

    async def _close_session(self, conn: _Connection) -> None:
        if self._connections.pop(conn.session_id, None) is not None:  # its totals, in one step
            self.metrics.session_closed(
                conn.frames_sent, conn.session.dropped_frames if conn.session else 0)
        if conn.ticket is not None:
            self._admission.release(conn.ticket)
        self.engine.close_stream(conn.session_id)
        if conn.webrtc is not None:
            try:
                await conn.webrtc.close()
            except Exception as exc:  # noqa: BLE001 - the session is over either way
                log.warning("session %s: closing WebRTC failed: %s", conn.session_id, exc)
        if conn.session is None:
            return
        stats = conn.session.stats(time.monotonic())
        log.info(
            "session %s end: %.1f s audio, %d frames sent, %d dropped, %d skipped hops, "
            "latency p50/p95 %s/%s ms, %.1f s open",
            conn.session_id, stats["audio_received_s"], stats["frames_sent"],
            stats["dropped_frames"], stats["skipped_hops"],
            _ms(stats["latency_p50_ms"]), _ms(stats["latency_p95_ms"]),
            time.monotonic() - conn.started_s,
        )

    # ---------------------------------------------------------------------------------- mesh
    def _basis_vectors(self) -> bytes | None:
        """The basis vectors for coefficient frames (f16), unless the basis is the facecap
        head's own blendshapes, whose morph targets the viewer loads from /assets/facecap.glb."""
        basis = self.contract.basis
        glb = self.config.assets_root / "facecap.glb"
        if basis.kind == "arkit" and glb.is_file():
            try:
                rig = load_rig("facecap")
            except UserError:  # the decoded asset is missing: send the vectors
                rig = None
            if (rig is not None and rig.template.shape == basis.template.shape
                    and np.allclose(rig.template, basis.template, atol=1e-6)
                    and all(n in rig.blendshape_names for n in basis.names)):
                return None
        return np.asarray(basis.vectors, dtype="<f2").tobytes()

    def _mesh_parts(self) -> tuple[bytes, bytes, int, tuple[str, ...]]:
        """The ``ready`` mesh from the model's basis: template, faces, and the coefficient
        names (widened to all 52 ARKit names when the basis is ARKit blendshapes)."""
        basis = self.contract.basis
        template = np.asarray(basis.template, dtype="<f4").reshape(-1, 3)
        faces = np.asarray(basis.faces, dtype="<u4").reshape(-1, 3)
        names = tuple(basis.names)
        self._weights_index: np.ndarray | None = None
        if set(names) <= set(ARKIT_NAMES):
            self._weights_index = np.array([ARKIT_NAMES.index(n) for n in names])
            names = ARKIT_NAMES
        return template.tobytes(), faces.tobytes(), int(template.shape[0]), names


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _address(ws: ServerConnection) -> str:
    """The client's IP address ("" when the transport has none, e.g. a Unix socket)."""
    peer = ws.remote_address
    return str(peer[0]) if peer else ""


def _limit_receive_buffer(ws: ServerConnection, hello: wire.Hello) -> None:
    """Fix the socket's receive buffer at about 1 s of the hello's audio (64-256 KiB).

    While the reader holds a client back (Session drop policy 1), what the client sent waits in
    this buffer, in the library's queue and in the client's send buffer, and the keepalive pings
    and pongs of both sides wait behind it. Auto-tuned, the buffer grows to megabytes (minutes
    of audio) during a fast upload's first seconds. Live audio needs 1 s of audio per round
    trip at most (64 KiB: 2 s of 16 kHz s16; 192 KiB: 1 s of the browser's 48 kHz f32)."""
    sock = ws.transport.get_extra_info("socket")
    if sock is None or hello.audio != "ws":
        return
    per_s = hello.sample_rate * bytes_per_sample(hello.encoding)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(max(per_s, 65536), 262144))


class _BoundedPongs(ServerConnection):
    """A connection that stops reading while it holds more than ``MAX_UNSENT_BYTES`` its peer
    has not taken.

    websockets answers every ping with a pong at once, whatever its write buffer holds: a peer
    that sends pings and reads nothing would grow the server's write buffer by what it sends,
    without bound (about 12 MB/s on loopback). The server's own messages cannot do that (each
    send waits for the buffer to drain below its high-water mark first), so reading an audio
    client that is slow to take its frames goes on (Session drop policy). Reading resumes once
    the peer took data, unless the library's own pause (a full queue of received messages)
    still holds it. A peer that stays stalled is cut off by the send timeout."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._holds: set[str] = set()  # why reading is paused: "queue", "unsent"
        self.recv_messages.pause = lambda: self._hold("queue", True)
        self.recv_messages.resume = lambda: self._hold("queue", False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            self._hold("unsent", True)  # writing is paused now: resume_writing releases it

    def resume_writing(self) -> None:
        super().resume_writing()
        self._hold("unsent", False)

    def _hold(self, reason: str, held: bool) -> None:
        was_paused = bool(self._holds)
        if held:
            self._holds.add(reason)
        else:
            self._holds.discard(reason)
        if self._holds and not was_paused:
            self.transport.pause_reading()
        elif was_paused and not self._holds:
            self.transport.resume_reading()


class _PeerStalled(Exception):
    """The client took no data for ``send_timeout_s``: the connection was cut off."""
