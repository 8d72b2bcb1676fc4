"""Protocol v1, the sans-I/O server side of one connection (messages: :mod:`realtime.messages`).

:class:`ServerProtocol` is the per-connection state machine, in the style of python-websockets:
the adapter feeds it every received message with :meth:`ServerProtocol.receive`, then drains
:meth:`ServerProtocol.events_received` and :meth:`ServerProtocol.data_to_send`, and closes the
socket with :attr:`ServerProtocol.close_code` once that is set. It never raises into the I/O
layer. Time is an argument: the adapter calls :meth:`ServerProtocol.check_deadline` with ``now``
by :attr:`ServerProtocol.hello_deadline` at the latest.

Whatever a client sent is repeated in an error message only through
:func:`realtime.errors.echo` (at most 64 characters and the original length).
"""

from __future__ import annotations

import enum
import hmac
import logging
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

from realtime.audio import bytes_per_sample, decode_pcm
from realtime.errors import CloseCode, ProtocolError, echo
from realtime.messages import (
    MAX_AUDIO_S,
    Audio,
    End,
    Error,
    Hello,
    Identity,
    Interrupt,
    Offer,
    ServerEnd,
    ServerMessage,
    decode,
    encode,
)

__all__ = ["AudioReceived", "Event", "ServerProtocol", "ServerProtocolConfig", "ServerState"]

logger = logging.getLogger(__name__)


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
    # A connection must send its hello this soon after opening (else `hello_timeout`, 1008): a
    # socket that never authenticates holds a connection slot for seconds, not for ever.
    hello_timeout_s: float = 5.0


class ServerState(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"  # hello accepted: audio and control flow
    ENDING = "ending"  # client sent end: the server is flushing frames
    CLOSED = "closed"  # a close is queued; input is ignored


class ServerProtocol:
    """Sans-I/O state machine of one server-side connection.

    Enforces: binary messages only, ``max_message_bytes``, hello first, exactly once and within
    ``hello_timeout_s`` of ``now`` at construction, protocol version 1, the token (compared in
    constant time), at most 1 s of audio per message in a whole number of
    samples, ``offer`` only for WebRTC audio and ``audio`` only for WebSocket audio, nothing but
    control after ``end``. A violation queues an ``error`` message and sets :attr:`close_code`;
    later input is ignored. :meth:`receive` never raises.
    """

    def __init__(self, config: ServerProtocolConfig | None = None, now: float = 0.0) -> None:
        """``now``: when the connection opened (the hello deadline counts from it)."""
        self.config = config or ServerProtocolConfig()
        self.state = ServerState.AWAITING_HELLO
        self._hello_due = now + self.config.hello_timeout_s
        self.hello: Hello | None = None
        self.close_code: int | None = None  # set once a close is queued
        self.failure: ProtocolError | None = None  # why, when close_code != 1000
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._offer_seen = False

    # ---- time
    @property
    def hello_deadline(self) -> float | None:
        """When :meth:`check_deadline` closes a connection still waiting for its hello; None
        once the hello was accepted (or a close is queued)."""
        return self._hello_due if self.state is ServerState.AWAITING_HELLO else None

    def check_deadline(self, now: float) -> None:
        """Queue ``hello_timeout`` and a 1008 close when no hello came by the deadline."""
        if self.state is ServerState.AWAITING_HELLO and now >= self._hello_due:
            self.fail(ProtocolError(
                "hello_timeout",
                f"no 'hello' within {self.config.hello_timeout_s:g} s of connecting",
                CloseCode.POLICY,
            ))

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
                f"field {field_name!r} is {echo(name)}; known identities: {', '.join(known)}",
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

    @property
    def has_data_to_send(self) -> bool:
        """True when :meth:`data_to_send` would return something."""
        return bool(self._out)

    def data_to_send(self) -> list[bytes]:
        """Drain the encoded messages to send, in order; then close if :attr:`close_code`."""
        out, self._out = self._out, []
        return out
