"""Protocol v1 messages: one frozen type per message, and pure encode/decode.

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

The per-connection state machine that uses them is :mod:`realtime.protocol`.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal, TypeAlias

import msgpack
import numpy as np

from realtime.audio import ENCODINGS
from realtime.errors import ProtocolError, echo

__all__ = [
    "PROTOCOL_VERSION",
    "MIN_SAMPLE_RATE_HZ",
    "MAX_SAMPLE_RATE_HZ",
    "SAMPLE_RATE_STEP_HZ",
    "MAX_AUDIO_S",
    "MAX_ERROR_MESSAGE_CHARS",
    "Direction",
    "Hello",
    "Audio",
    "Offer",
    "Identity",
    "Interrupt",
    "End",
    "Mesh",
    "Basis",
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
]

PROTOCOL_VERSION = 1
MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
# Rates are whole multiples of 25 Hz (8000, 11025, 16000, 22050, 32000, 44100, 48000 all are): any
# such rate reduces against the server's rate to a few hundred polyphase phases, so the server's
# resampler filter is designed in milliseconds. An arbitrary rate (47999 Hz) would need millions
# of taps: a second of CPU and tens of MB per rate, which a client could ask for at will.
SAMPLE_RATE_STEP_HZ = 25
MAX_AUDIO_S = 1.0  # most audio one `audio` message may hold
# Longest `error.message`: a sentence naming a field and what was expected; longer text is cut
# (client values inside are cut shorter still, by realtime.errors.echo).
MAX_ERROR_MESSAGE_CHARS = 512
AUDIO_MODES = ("ws", "webrtc")
# Frame formats: absolute vertices (f16 or f32), or the model's coefficients (f16), which the
# client applies itself (morph targets on the GPU): ~100 bytes a frame instead of ~16 KB.
FORMATS = ("f16", "f32", "coeffs")
Direction = Literal["to_server", "to_client"]


def _bad(field_name: str, expected: str, got: object) -> ProtocolError:
    return ProtocolError("bad_value", f"field {field_name!r} must be {expected}, got {echo(got)}")


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
    sample_rate: int  # Hz, 8000..48000, a multiple of 25
    encoding: str  # "pcm_s16le" | "pcm_f32le"
    audio: str = "ws"  # "ws": audio messages; "webrtc": an offer follows
    identity: str | None = None  # None: server default; "auto": picked from the audio
    format: str = "f16"  # frames carry vertices ("f16" | "f32") or coefficients ("coeffs")
    weights: bool = False  # also send ARKit weights (f32) in every frame (not with "coeffs")
    token: str | None = None

    def __post_init__(self) -> None:
        if self.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_protocol",
                f"field 'protocol' must be {PROTOCOL_VERSION}, got {self.protocol!r}",
            )
        _check_int("sample_rate", self.sample_rate, MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)
        if self.sample_rate % SAMPLE_RATE_STEP_HZ:
            raise _bad("sample_rate", f"a multiple of {SAMPLE_RATE_STEP_HZ} Hz (e.g. 16000, "
                       "22050, 44100, 48000)", self.sample_rate)
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
class Basis:
    """What a client needs to apply coefficient frames: vertices = template + coeffs . vectors.

    ``names`` are the K coefficient names (ARKit blendshape names for the facecap head, whose
    morph targets the viewer already has: then ``vectors`` is omitted); ``vectors`` is
    f16 little-endian (K*V*3) for any other basis."""

    names: tuple[str, ...]
    vectors: bytes | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise _bad("basis.names", "a non-empty array of strings", self.names)
        if self.vectors is not None and len(self.vectors) % (6 * len(self.names)):
            raise _bad("basis.vectors", f"a multiple of {6 * len(self.names)} bytes "
                       "(K*V*3 float16)", f"{len(self.vectors)} bytes")


@dataclass(frozen=True, kw_only=True)
class Ready:
    """Answer to hello: session id, frame rate, identities, the face mesh, and (for coefficient
    frames) the motion basis."""

    type: ClassVar[str] = "ready"
    protocol: int = PROTOCOL_VERSION
    session: str
    fps: int  # the model's motion frame rate (its contract)
    identities: tuple[str, ...]
    identity: str
    mesh: Mesh
    blendshapes: tuple[str, ...]
    lookahead_ms: float | None = None  # audio the model waits for past a frame's time
    basis: Basis | None = None  # only when the hello asked for format "coeffs"

    def __post_init__(self) -> None:
        if self.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_protocol",
                f"field 'protocol' must be {PROTOCOL_VERSION}, got {self.protocol!r}",
            )
        _check_nonempty("session", self.session)
        _check_int("fps", self.fps, 1, 240)
        _check_nonempty("identity", self.identity)
        if self.lookahead_ms is not None:
            object.__setattr__(self, "lookahead_ms", float(self.lookahead_ms))
            _check_float("lookahead_ms", self.lookahead_ms)
        if self.basis is not None and self.basis.vectors is not None:
            expected = 6 * len(self.basis.names) * self.mesh.vertex_count
            if len(self.basis.vectors) != expected:
                raise _bad("basis.vectors", f"{expected} bytes (K*V*3 float16)",
                           f"{len(self.basis.vectors)} bytes")


@dataclass(frozen=True, kw_only=True)
class Answer:
    """WebRTC SDP answer."""

    type: ClassVar[str] = "answer"
    sdp: str

    def __post_init__(self) -> None:
        _check_nonempty("sdp", self.sdp)


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One motion frame at audio time ``t = seq / fps`` seconds: absolute vertex positions, or
    the model's coefficients (exactly one of ``vertices`` and ``coeffs``)."""

    type: ClassVar[str] = "frame"
    seq: int  # from 0, without gaps except counted drops
    t: float  # seconds, = seq / fps
    vertices: bytes | None = None  # V*3 little-endian floats in the hello's format (f16 or f32)
    weights: bytes | None = None  # 52 ARKit weights, f32 little-endian, only if asked
    latency_ms: float  # motion latency of this frame (PROTOCOL.md §Timing)
    coeffs: bytes | None = None  # K f16 little-endian, in ready.basis order (format "coeffs")

    def __post_init__(self) -> None:
        _check_int("seq", self.seq, 0)
        object.__setattr__(self, "t", float(self.t))
        object.__setattr__(self, "latency_ms", float(self.latency_ms))
        _check_float("t", self.t)
        _check_float("latency_ms", self.latency_ms)
        if (self.vertices is None) == (self.coeffs is None):
            raise _bad("vertices", "present exactly when 'coeffs' is absent",
                       "both" if self.coeffs is not None else "neither")
        if self.vertices is not None and (not self.vertices or len(self.vertices) % 6):
            raise _bad("vertices", "a non-empty multiple of 6 bytes (V*3 f16 or f32)",
                       f"{len(self.vertices)} bytes")
        if self.coeffs is not None and (not self.coeffs or len(self.coeffs) % 2):
            raise _bad("coeffs", "a non-empty multiple of 2 bytes (K float16)",
                       f"{len(self.coeffs)} bytes")
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
        if len(self.message) > MAX_ERROR_MESSAGE_CHARS:
            object.__setattr__(self, "message", self.message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…")


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
    if isinstance(value, Mesh | Basis):  # nested maps follow the same rule: nil is left out
        return {f.name: _to_wire(getattr(value, f.name)) for f in fields(value)
                if getattr(value, f.name) is not None}
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
_NESTED: dict[str, type[Any]] = {"Mesh": Mesh, "Basis": Basis}
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
    if base in _NESTED:
        if not isinstance(value, dict):
            raise ProtocolError(
                "bad_field_type", f"field {name!r} must be a map, got {type(value).__name__}"
            )
        return _build(_NESTED[base], value, prefix=f"{name}.")
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
        has_default = f.default is not MISSING and f.name not in _WIRE_REQUIRED
        if value is None and has_default:
            continue  # "Optional fields may be absent or nil" (PROTOCOL.md §1): nil = default
        if value is _MISSING:
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
            f"unknown message type {echo(kind)}; a {side} sends one of {', '.join(table)}",
        )
    return _build(cls, wire)
