"""Protocol v1: message types, pure encode/decode, and the sans-I/O server connection.

PROTOCOL.md is the authoritative description; this module implements it, and
``web_client/protocol.js`` mirrors it. Both are tested on the golden byte fixtures in
``tests/fixtures/protocol/``.

Every WebSocket message is binary and holds one msgpack map with a string ``type``. One frozen
dataclass per message type; constructing one validates value ranges, so :func:`encode` only ever
writes valid messages. :func:`decode` raises :class:`~realtime.errors.ProtocolError` for
anything that is not a valid message for the receiving side, naming the field and what was
expected.

Canonical encoding (what :func:`encode` writes, byte for byte): a map whose first key is
``type``, then the fields in the order PROTOCOL.md lists them; optional fields whose value is nil
are omitted; floats are float64, integers use the shortest msgpack form, bytes use ``bin``.
Decoders accept integers for float fields, nil for optional fields, and ignore unknown keys.

:class:`ServerProtocol` is the per-connection state machine, in the style of python-websockets:
the adapter feeds it every received message with :meth:`ServerProtocol.receive`, then drains
:meth:`ServerProtocol.events_received` and :meth:`ServerProtocol.data_to_send`, and closes the
socket with :attr:`ServerProtocol.close_code` once that is set. It never raises into the I/O
layer.
"""

from __future__ import annotations

import enum
import hmac
import logging
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeAlias

import msgpack
import numpy as np
from numpy.typing import NDArray

from realtime.audio import ENCODINGS, bytes_per_sample, decode_pcm
from realtime.errors import CloseCode, ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "MIN_SAMPLE_RATE_HZ",
    "MAX_SAMPLE_RATE_HZ",
    "MAX_AUDIO_S",
    "Direction",
    "Hello",
    "Audio",
    "Offer",
    "Identity",
    "Interrupt",
    "End",
    "Mesh",
    "Ready",
    "Answer",
    "Frame",
    "Stats",
    "Error",
    "ServerEnd",
    "ClientMessage",
    "ServerMessage",
    "Message",
    "encode",
    "decode",
    "AudioReceived",
    "Event",
    "ServerProtocolConfig",
    "ServerState",
    "ServerProtocol",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
MAX_AUDIO_S = 1.0  # most audio one `audio` message may hold
AUDIO_MODES = ("ws", "webrtc")
FORMATS = ("f16", "f32")
Direction = Literal["to_server", "to_client"]


def _bad(field_name: str, expected: str, got: object) -> ProtocolError:
    return ProtocolError("bad_value", f"field {field_name!r} must be {expected}, got {got!r}")


def _check_int(name: str, value: int, lo: int, hi: int | None = None) -> None:
    if value < lo or (hi is not None and value > hi):
        rng = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise _bad(name, rng, value)


def _check_float(name: str, value: float, lo: float = 0.0) -> None:
    if not math.isfinite(value) or value < lo:
        raise _bad(name, f"a finite number >= {lo:g}", value)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _bad(name, "one of " + ", ".join(repr(c) for c in choices), value)


def _check_nonempty(name: str, value: str) -> None:
    if not value:
        raise _bad(name, "a non-empty string", value)


# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True, kw_only=True)
class Hello:
    """First client message: audio format, wanted output, identity and token."""

    type: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    sample_rate: int  # Hz, 8000..48000
    encoding: str  # "pcm_s16le" | "pcm_f32le"
    audio: str = "ws"  # "ws": audio messages; "webrtc": an offer follows
    identity: str | None = None  # None: server default; "auto": picked from the audio
    format: str = "f16"  # vertex format of frames: "f16" | "f32"
    weights: bool = False  # also send ARKit weights (f32) in every frame
    token: str | None = None

    def __post_init__(self) -> None:
        if self.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_protocol",
                f"field 'protocol' must be {PROTOCOL_VERSION}, got {self.protocol!r}",
            )
        _check_int("sample_rate", self.sample_rate, MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)
        _check_choice("encoding", self.encoding, ENCODINGS)
        _check_choice("audio", self.audio, AUDIO_MODES)
        _check_choice("format", self.format, FORMATS)
        if self.identity is not None:
            _check_nonempty("identity", self.identity)


@dataclass(frozen=True, kw_only=True)
class Audio:
    """Mono PCM in the hello's encoding and rate, at most 1 s."""

    type: ClassVar[str] = "audio"
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Offer:
    """WebRTC SDP offer (only when the hello said ``audio: "webrtc"``)."""

    type: ClassVar[str] = "offer"
    sdp: str

    def __post_init__(self) -> None:
        _check_nonempty("sdp", self.sdp)


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Switch talking identity mid-stream (blended, not a jump)."""

    type: ClassVar[str] = "identity"
    identity: str

    def __post_init__(self) -> None:
        _check_nonempty("identity", self.identity)


@dataclass(frozen=True, kw_only=True)
class Interrupt:
    """Drop pending audio and ease the face to neutral."""

    type: ClassVar[str] = "interrupt"


@dataclass(frozen=True, kw_only=True)
class End:
    """No more audio: the server sends every remaining frame, then ``end`` and closes 1000."""

    type: ClassVar[str] = "end"


# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True, kw_only=True)
class Mesh:
    """Face template: ``template`` is f32 little-endian (V*3), ``faces`` u32 little-endian (F*3)."""

    vertex_count: int
    template: bytes
    faces: bytes

    def __post_init__(self) -> None:
        _check_int("mesh.vertex_count", self.vertex_count, 1)
        if len(self.template) != 12 * self.vertex_count:
            raise _bad(
                "mesh.template",
                f"{12 * self.vertex_count} bytes (vertex_count*3 float32)",
                f"{len(self.template)} bytes",
            )
        if len(self.faces) % 12:
            raise _bad(
                "mesh.faces", "a multiple of 12 bytes (3 uint32 a triangle)", len(self.faces)
            )
        faces = np.frombuffer(self.faces, dtype="<u4")
        if faces.size and int(faces.max()) >= self.vertex_count:
            raise _bad("mesh.faces", f"vertex indices < {self.vertex_count}", int(faces.max()))


@dataclass(frozen=True, kw_only=True)
class Ready:
    """Answer to hello: session id, frame rate, identities and the face mesh."""

    type: ClassVar[str] = "ready"
    protocol: int = PROTOCOL_VERSION
    session: str
    fps: int = 30
    identities: tuple[str, ...]
    identity: str
    mesh: Mesh
    blendshapes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_protocol",
                f"field 'protocol' must be {PROTOCOL_VERSION}, got {self.protocol!r}",
            )
        _check_nonempty("session", self.session)
        _check_int("fps", self.fps, 1, 240)
        _check_nonempty("identity", self.identity)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """WebRTC SDP answer."""

    type: ClassVar[str] = "answer"
    sdp: str

    def __post_init__(self) -> None:
        _check_nonempty("sdp", self.sdp)


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One motion frame: absolute vertex positions at audio time ``t = seq / fps`` seconds."""

    type: ClassVar[str] = "frame"
    seq: int  # from 0, without gaps except counted drops
    t: float  # seconds, = seq / fps
    vertices: bytes  # V*3 little-endian floats in the hello's format (f16 or f32)
    weights: bytes | None = None  # 52 ARKit weights, f32 little-endian, only if asked
    latency_ms: float  # motion latency of this frame (PROTOCOL.md §Timing)

    def __post_init__(self) -> None:
        _check_int("seq", self.seq, 0)
        object.__setattr__(self, "t", float(self.t))
        object.__setattr__(self, "latency_ms", float(self.latency_ms))
        _check_float("t", self.t)
        _check_float("latency_ms", self.latency_ms)
        if not self.vertices or len(self.vertices) % 6:
            raise _bad("vertices", "a non-empty multiple of 6 bytes (V*3 f16 or f32)",
                       f"{len(self.vertices)} bytes")
        if self.weights is not None and len(self.weights) % 4:
            raise _bad("weights", "a multiple of 4 bytes (float32)", f"{len(self.weights)} bytes")


@dataclass(frozen=True, kw_only=True)
class Stats:
    """About once a second: latency percentiles over a recent window, drops, queue depth."""

    type: ClassVar[str] = "stats"
    frames_sent: int
    dropped_frames: int  # frames never sent: stale hops skipped + oldest dropped from the queue
    skipped_hops: int  # stale hops skipped under overload
    queue_depth: int  # frames waiting to be sent
    audio_received_s: float  # seconds of audio received so far
    latency_p50_ms: float | None = None  # nil until a frame was sent in the window
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("frames_sent", "dropped_frames", "skipped_hops", "queue_depth"):
            _check_int(name, getattr(self, name), 0)
        for name in ("audio_received_s", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
                _check_float(name, float(value))


@dataclass(frozen=True, kw_only=True)
class Error:
    """Sent once, just before the server closes with a non-1000 code."""

    type: ClassVar[str] = "error"
    code: str
    message: str

    def __post_init__(self) -> None:
        _check_nonempty("code", self.code)


@dataclass(frozen=True, kw_only=True)
class ServerEnd:
    """Last message of a completed stream (type ``end``); ``frames`` = frame messages sent."""

    type: ClassVar[str] = "end"
    frames: int

    def __post_init__(self) -> None:
        _check_int("frames", self.frames, 0)


ClientMessage: TypeAlias = Hello | Audio | Offer | Identity | Interrupt | End
ServerMessage: TypeAlias = Ready | Answer | Frame | Stats | Error | ServerEnd
Message: TypeAlias = ClientMessage | ServerMessage

_CLIENT_TYPES: dict[str, type[Any]] = {
    c.type: c for c in (Hello, Audio, Offer, Identity, Interrupt, End)
}
_SERVER_TYPES: dict[str, type[Any]] = {
    c.type: c for c in (Ready, Answer, Frame, Stats, Error, ServerEnd)
}

# --------------------------------------------------------------------------- encode


def _to_wire(value: object) -> object:
    if isinstance(value, Mesh):
        return {f.name: _to_wire(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_to_wire(v) for v in value]
    return value


def encode(msg: Message) -> bytes:
    """Canonical msgpack bytes of ``msg`` (see the module docstring)."""
    wire: dict[str, object] = {"type": msg.type}
    for f in fields(msg):
        value = getattr(msg, f.name)
        if value is not None:
            wire[f.name] = _to_wire(value)
    return msgpack.packb(wire, use_bin_type=True)


# --------------------------------------------------------------------------- decode

_MISSING = object()
# Fields with a dataclass default for convenience in Python that a peer must still send.
_WIRE_REQUIRED = frozenset({"protocol", "fps"})
# Expected msgpack type of each field, by annotation string (the dataclass annotations are
# strings because of `from __future__ import annotations`).
_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "int": ("an integer", (int,)),
    "float": ("a number", (int, float)),
    "str": ("a string", (str,)),
    "bytes": ("binary (msgpack bin)", (bytes,)),
    "bool": ("a boolean", (bool,)),
}


def _convert(name: str, annotation: str, value: object) -> object:
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None:
        if optional:
            return None
        raise ProtocolError("bad_field_type", f"field {name!r} must not be nil")
    if base == "Mesh":
        if not isinstance(value, dict):
            raise ProtocolError(
                "bad_field_type", f"field {name!r} must be a map, got {type(value).__name__}"
            )
        return _build(Mesh, value, prefix=f"{name}.")
    if base == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProtocolError("bad_field_type", f"field {name!r} must be an array of strings")
        return tuple(value)
    what, types = _KINDS[base]
    # bool is an int in Python but not in msgpack: never accept one for the other.
    if not isinstance(value, types) or (isinstance(value, bool) and base != "bool"):
        raise ProtocolError(
            "bad_field_type", f"field {name!r} must be {what}, got {_wire_type(value)}"
        )
    if isinstance(value, int | float) and base == "float":
        return float(value)
    return value


def _wire_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             bytes: "binary", list: "an array", dict: "a map"}
    return names.get(type(value), type(value).__name__)


def _build(cls: type[Any], wire: dict[Any, Any], prefix: str = "") -> Any:
    """Check and convert the fields of ``cls`` found in ``wire``, then construct it."""
    kwargs: dict[str, object] = {}
    for f in fields(cls):
        name = prefix + f.name
        value = wire.get(f.name, _MISSING)
        if value is _MISSING:
            has_default = f.default is not MISSING and f.name not in _WIRE_REQUIRED
            if has_default:
                continue
            where = f"field {prefix[:-1]!r}" if prefix else f"{cls.type!r} message"
            raise ProtocolError("missing_field", f"{where} lacks required field {name!r}")
        kwargs[f.name] = _convert(name, str(f.type), value)
    return cls(**kwargs)


def decode(data: bytes, *, direction: Direction) -> Message:
    """Parse one WebSocket message received by one side.

    ``direction="to_server"`` decodes client messages (hello, audio, ...), ``"to_client"``
    server messages (ready, frame, ...). Raises :class:`ProtocolError` (close code 1003) for
    non-msgpack bytes, trailing bytes, a non-map, a missing or unknown ``type``, a missing or
    wrong-typed field, or an out-of-range value.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("text_frame", "messages must be binary msgpack, not text")
    try:
        wire = msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        raise ProtocolError(
            "bad_msgpack", "message holds bytes after the first msgpack value"
        ) from None
    except Exception as exc:  # msgpack raises several types for malformed input
        detail = str(exc) or type(exc).__name__
        raise ProtocolError("bad_msgpack", f"message is not valid msgpack ({detail})") from None
    if not isinstance(wire, dict):
        raise ProtocolError(
            "not_a_map", f"message must be a msgpack map, got {_wire_type(wire)}"
        )
    if any(not isinstance(k, str) for k in wire):
        raise ProtocolError("not_a_map", "message map keys must all be strings")
    kind = wire.get("type", _MISSING)
    if kind is _MISSING:
        raise ProtocolError("missing_field", "message lacks the required field 'type'")
    if not isinstance(kind, str):
        raise ProtocolError(
            "bad_field_type", f"field 'type' must be a string, got {_wire_type(kind)}"
        )
    table = _CLIENT_TYPES if direction == "to_server" else _SERVER_TYPES
    cls = table.get(kind)
    if cls is None:
        side = "client" if direction == "to_server" else "server"
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind!r}; a {side} sends one of {', '.join(table)}",
        )
    return _build(cls, wire)


# --------------------------------------------------------------------------- server connection


@dataclass(frozen=True)
class AudioReceived:
    """Event: an ``audio`` message decoded to mono float32 at the hello's rate."""

    samples: NDArray[np.float32] = field(repr=False)  # (n,), in [-1, 1]
    sample_rate_hz: int


Event: TypeAlias = Hello | AudioReceived | Offer | Identity | Interrupt | End


@dataclass(frozen=True)
class ServerProtocolConfig:
    """Connection-level limits and checks of :class:`ServerProtocol`."""

    # None: no token needed. Otherwise the hello's token must equal it (else close 1008).
    token: str | None = None
    # Largest accepted message. 1 s of 48 kHz pcm_f32le is 192000 bytes plus ~10 of framing.
    max_message_bytes: int = 256 * 1024
    # Accept `audio: "webrtc"` (the server has a WebRTC adapter).
    allow_webrtc: bool = True
    # Known identity names; None skips the check. "auto" is also accepted in the hello.
    identities: tuple[str, ...] | None = None


class ServerState(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"  # hello accepted: audio and control flow
    ENDING = "ending"  # client sent end: the server is flushing frames
    CLOSED = "closed"  # a close is queued; input is ignored


class ServerProtocol:
    """Sans-I/O state machine of one server-side connection.

    Enforces: binary messages only, ``max_message_bytes``, hello first and exactly once,
    protocol version 1, the token, at most 1 s of audio per message in a whole number of
    samples, ``offer`` only for WebRTC audio and ``audio`` only for WebSocket audio, nothing but
    control after ``end``. A violation queues an ``error`` message and sets :attr:`close_code`;
    later input is ignored. :meth:`receive` never raises.
    """

    def __init__(self, config: ServerProtocolConfig | None = None) -> None:
        self.config = config or ServerProtocolConfig()
        self.state = ServerState.AWAITING_HELLO
        self.hello: Hello | None = None
        self.close_code: int | None = None  # set once a close is queued
        self.failure: ProtocolError | None = None  # why, when close_code != 1000
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._offer_seen = False

    # ---- input
    def receive(self, data: bytes | str, now: float) -> None:
        """Feed one received WebSocket message (``str`` for a text frame)."""
        if self.state is ServerState.CLOSED:
            return
        try:
            self._receive(data)
        except ProtocolError as exc:
            self.fail(exc)
        except Exception:  # a bug: report it as internal, never as a traceback
            logger.exception("internal error while handling a client message")
            self.fail(ProtocolError("internal", "internal server error", CloseCode.INTERNAL))

    def _receive(self, data: bytes | str) -> None:
        if isinstance(data, str):
            raise ProtocolError("text_frame", "messages must be binary msgpack, not text")
        limit = self.config.max_message_bytes
        if len(data) > limit:
            raise ProtocolError(
                "too_big", f"message is {len(data)} bytes; the limit is {limit}", CloseCode.TOO_BIG
            )
        msg = decode(data, direction="to_server")
        if self.state is ServerState.AWAITING_HELLO:
            if not isinstance(msg, Hello):
                raise ProtocolError(
                    "hello_expected", f"the first message must be 'hello', got {msg.type!r}"
                )
            self._accept_hello(msg)
            return
        if isinstance(msg, Hello):
            raise ProtocolError("duplicate_hello", "'hello' must be sent exactly once")
        assert self.hello is not None
        if isinstance(msg, Audio):
            self._accept_audio(msg, self.hello)
        elif isinstance(msg, Offer):
            self._accept_offer(msg, self.hello)
        elif isinstance(msg, Identity):
            self._check_identity(msg.identity, "identity")
            self._events.append(msg)
        elif isinstance(msg, End):
            if self.state is ServerState.ENDING:
                raise ProtocolError("unexpected_message", "'end' must be sent only once")
            self.state = ServerState.ENDING
            self._events.append(msg)
        elif isinstance(msg, Interrupt):
            self._events.append(msg)

    def _accept_hello(self, hello: Hello) -> None:
        expected = self.config.token
        if expected is not None and (
            hello.token is None
            or not hmac.compare_digest(hello.token.encode(), expected.encode())
        ):
            raise ProtocolError(
                "bad_token",
                "field 'token' is missing or wrong for this server",
                CloseCode.POLICY,
            )
        if hello.audio == "webrtc" and not self.config.allow_webrtc:
            raise ProtocolError("unsupported", "this server does not accept audio 'webrtc'")
        if hello.identity is not None and hello.identity != "auto":
            self._check_identity(hello.identity, "identity")
        self.hello = hello
        self.state = ServerState.OPEN
        self._events.append(hello)

    def _accept_audio(self, msg: Audio, hello: Hello) -> None:
        if self.state is ServerState.ENDING:
            raise ProtocolError("unexpected_message", "'audio' after 'end'")
        if hello.audio != "ws":
            raise ProtocolError(
                "unexpected_message", "'audio' messages need hello audio 'ws' (it was 'webrtc')"
            )
        limit = int(hello.sample_rate * MAX_AUDIO_S) * bytes_per_sample(hello.encoding)
        if len(msg.data) > limit:
            raise ProtocolError(
                "audio_too_long",
                f"field 'data' holds {len(msg.data)} bytes; at most {limit} "
                f"({MAX_AUDIO_S:g} s of {hello.encoding} at {hello.sample_rate} Hz)",
                CloseCode.TOO_BIG,
            )
        samples = decode_pcm(msg.data, hello.encoding)
        self._events.append(AudioReceived(samples=samples, sample_rate_hz=hello.sample_rate))

    def _accept_offer(self, msg: Offer, hello: Hello) -> None:
        if hello.audio != "webrtc":
            raise ProtocolError("unexpected_message", "'offer' needs hello audio 'webrtc'")
        if self._offer_seen:
            raise ProtocolError("unexpected_message", "'offer' must be sent only once")
        self._offer_seen = True
        self._events.append(msg)

    def _check_identity(self, name: str, field_name: str) -> None:
        known = self.config.identities
        if known is not None and name not in known:
            raise ProtocolError(
                "unknown_identity",
                f"field {field_name!r} is {name!r}; known identities: {', '.join(known)}",
            )

    # ---- output
    def send(self, msg: ServerMessage) -> bool:
        """Queue a server message; returns False (and drops it) once a close is queued."""
        if self.state is ServerState.CLOSED:
            return False
        self._out.append(encode(msg))
        return True

    def fail(self, error: ProtocolError) -> None:
        """Queue ``error`` then a close with ``error.close_code`` (e.g. server full: 1013)."""
        if self.state is ServerState.CLOSED:
            return
        self._out.append(encode(Error(code=error.code, message=error.message)))
        self.failure = error
        self.close_code = error.close_code
        self.state = ServerState.CLOSED

    def finish(self, frames: int) -> None:
        """Queue the final ``end`` (``frames`` frame messages sent) and a 1000 close."""
        if self.state is ServerState.CLOSED:
            return
        self._out.append(encode(ServerEnd(frames=frames)))
        self.close_code = CloseCode.NORMAL
        self.state = ServerState.CLOSED

    def events_received(self) -> list[Event]:
        """Drain the events produced by :meth:`receive`, in arrival order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Drain the encoded messages to send, in order; then close if :attr:`close_code`."""
        out, self._out = self._out, []
        return out
