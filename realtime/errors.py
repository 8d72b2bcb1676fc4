"""The real-time server's part of the one error tree (``models.errors``): protocol errors.

Every error that may reach a client is a :class:`ProtocolError`: it carries a short machine code
(``"bad_field_type"``), a human message that names the field and what was expected, and the
WebSocket close code to close with. Adapters turn it into an ``error`` message plus a close;
a traceback never crosses the wire.
"""

from __future__ import annotations

from enum import IntEnum

from models.errors import UserError

__all__ = ["ECHO_CHARS", "CloseCode", "ProtocolError", "echo"]

# Most characters of a client's value that an error message (and so the log) repeats: enough to
# recognise it, never enough to turn one message into an amplifier (a 256 KiB identity name
# echoed back, and into the log, for every connection).
ECHO_CHARS = 64


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters with an
    ellipsis and the original length: ``'xxxx'… (200000 characters)``."""
    if isinstance(value, str | bytes | bytearray) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}… ({len(value)} {unit})"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}… ({len(text)} characters)"
    return text


class CloseCode(IntEnum):
    """WebSocket close codes used by protocol v1 (RFC 6455 §7.4.1)."""

    NORMAL = 1000  # the stream ended: every frame was sent
    UNSUPPORTED = 1003  # bad message, unsupported format, message in the wrong state
    POLICY = 1008  # bad or missing token
    TOO_BIG = 1009  # message above the size limit, or more than 1 s of audio in one message
    INTERNAL = 1011  # a server bug; the message never carries a traceback
    TRY_AGAIN_LATER = 1013  # the server is full


class ProtocolError(UserError):
    """Bad input from a peer, or a refusal the peer must be told about.

    ``code`` is a stable snake_case identifier (listed in PROTOCOL.md), ``message`` a sentence
    for humans, ``close_code`` the WebSocket close code that follows the ``error`` message.
    """

    def __init__(
        self, code: str, message: str, close_code: int = CloseCode.UNSUPPORTED
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = int(close_code)

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, close_code={self.close_code})"
