"""Protocol abuse against one real server: a table of what hostile clients send (hand-built
msgpack, every wrong hello field, messages out of order, odd audio, oversize and fragmented
messages, frames that break RFC 6455), each with the `error` code and close code PROTOCOL.md §5
documents; then HTTP abuse, ping floods, fuzzed sessions, 100 abrupt disconnects that must leak
nothing, and SIGTERM. After every case a well-behaved client still completes a session.

One server for the whole module (``serve_forever``, as ``talker serve`` runs it, with a token),
so that what one case leaves behind shows up in the next. Every wait is bounded."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime import messages as wire
from realtime.audio import encode_pcm
from realtime.client import StreamOptions, stream_file
from realtime.engine import EngineConfig
from realtime.server import MAX_UNSENT_BYTES, ServerConfig, TalkerServer
from tests.realtime.conftest import read_to_close

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "abuse-token"
SR = 16000
FPS = 30
LIMIT = ServerConfig().max_message_bytes  # 256 KiB
STEP_S = 5.0  # longest wait for one send or one server message
CASE_S = 15.0  # longest a whole case may take
DROP = object()  # a hello field left out
CLIENT_ERRORS = {  # every code PROTOCOL.md §5 lists, but `internal`
    "text_frame", "bad_msgpack", "not_a_map", "missing_field", "bad_field_type", "bad_value",
    "unknown_type", "unsupported_protocol", "hello_expected", "duplicate_hello",
    "unexpected_message", "bad_audio", "unsupported", "unknown_identity", "bad_token",
    "hello_timeout", "too_many_attempts", "too_big", "audio_too_long", "idle_timeout",
    "server_full", "too_many_connections",
}


# ------------------------------------------------------------------------------ the server
@dataclass
class Live:
    server: TalkerServer
    task: asyncio.Task[None]  # serve_forever: SIGTERM ends it

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tiny_model: Any) -> AsyncIterator[Live]:
    server = TalkerServer(tiny_model, ServerConfig(port=0, token=TOKEN),
                          engine_config=EngineConfig(torch_threads=1))
    task = asyncio.create_task(server.serve_forever())
    await until(lambda: server._server is not None, 10.0)
    yield Live(server, task)
    if not task.done():  # the SIGTERM test did not run
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


async def until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


_addresses = (f"127.1.{i // 250}.{1 + i % 250}" for i in itertools.count())


def new_address() -> str:
    """A client address of its own (any 127/8 address reaches the server): wrong tokens and
    per-address caps of one case never touch another."""
    return next(_addresses)


async def open_ws(live: Live, source: str | None = None) -> ClientConnection:
    """A WebSocket from ``source`` whose close, when aborted, is a TCP reset (SO_LINGER 0)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.bind((source or new_address(), 0))
    sock.setblocking(False)
    await asyncio.wait_for(
        asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", live.server.port)), STEP_S)
    return await asyncio.wait_for(
        connect(live.url, sock=sock, max_size=None, compression=None), STEP_S)


# ------------------------------------------------------------------------ bytes, by hand
def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def raw_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A msgpack map16 of already-packed keys and values (duplicates and odd keys allowed)."""
    return b"\xde" + len(pairs).to_bytes(2, "big") + b"".join(k + v for k, v in pairs)


def hello_map(**over: Any) -> dict[str, Any]:
    fields = {"type": "hello", "protocol": 1, "sample_rate": SR, "encoding": "pcm_s16le",
              "token": TOKEN, **over}
    return {k: v for k, v in fields.items() if v is not DROP}


def hello(**over: Any) -> bytes:
    return pack(hello_map(**over))


def audio(data: bytes) -> bytes:
    return pack({"type": "audio", "data": data})


def f32(*values: float) -> bytes:
    return np.array(values, "<f4").tobytes()


def tone(n: int, rate: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype(np.float32)


TONE = tone(SR // 4)  # 0.25 s
SPEAK = audio(encode_pcm(TONE, "pcm_s16le"))
SPEAK_F32 = audio(encode_pcm(TONE, "pcm_f32le"))
END = pack({"type": "end"})
INTERRUPT = pack({"type": "interrupt"})
HELLO_F32 = hello(encoding="pcm_f32le")


def talk(**over: Any) -> list[bytes]:
    """A whole session with hello fields ``over`` (audio in the hello's rate and encoding)."""
    rate, encoding = over.get("sample_rate", SR), over.get("encoding", "pcm_s16le")
    return [hello(**over), audio(encode_pcm(tone(rate // 4, rate), encoding)), END]


@dataclass(frozen=True)
class Fragments:
    """One message sent as ``count`` frames (a start frame and continuation frames)."""

    data: bytes | str
    count: int

    def pieces(self) -> list[Any]:
        step = max(1, math.ceil(len(self.data) / self.count))
        return [self.data[i : i + step] for i in range(0, len(self.data), step)]


@dataclass(frozen=True)
class Text:
    """A text frame holding these bytes as they are (valid UTF-8 or not)."""

    data: bytes


@dataclass(frozen=True)
class Wire:
    """Bytes written to the TCP stream under the client's WebSocket framing."""

    data: bytes


def ws_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
             masked: bool = True) -> bytes:
    """One WebSocket frame (RFC 6455 §5.2), masked as a client must, unless told otherwise."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit, n = (0x80 if masked else 0), len(payload)
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 1 << 16:
        head = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = b"\x5a\xa5\x0f\xf0"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


Send = bytes | str | Fragments | Text | Wire


def then_end(data: bytes, opcode: int = 2) -> Wire:
    """`end`, then ``data`` in the same TCP write: the server reads it before it can have
    flushed the last frames and closed (a message sent after `end` may otherwise meet a
    finished session)."""
    return Wire(ws_frame(2, END) + ws_frame(opcode, data))


async def send(ws: ClientConnection, item: Send) -> None:
    if isinstance(item, Wire):
        ws.transport.write(item.data)
    elif isinstance(item, Text):
        await ws.send(item.data, text=True)
    elif isinstance(item, Fragments):
        await ws.send(item.pieces())
    else:
        await ws.send(item)


async def exchange(live: Live, sends: list[Send]) -> tuple[list[wire.Message], int | None]:
    """Send ``sends`` (stopping once the server closes), then read to the close."""
    ws = await open_ws(live)
    try:
        for item in sends:
            try:
                await asyncio.wait_for(send(ws, item), STEP_S)
            except ConnectionClosed:
                break
        return await asyncio.wait_for(read_to_close(ws, STEP_S), CASE_S)
    finally:
        ws.transport.abort()


# ------------------------------------------------------------------------------ health
async def http(port: int, raw: bytes) -> tuple[int | None, bytes]:
    """One raw HTTP exchange: (status, body), or (None, b"") when the server closed without
    an answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), STEP_S)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), STEP_S)
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    if not answer:
        return None, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(path: bytes | str, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    target = path.encode() if isinstance(path, str) else path
    return method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


async def assert_healthy(live: Live) -> None:
    """The server is back to no connection, /health answers, and a fresh well-behaved client
    completes a short session: hello, ready, audio, every frame, end, 1000."""
    server = live.server
    await until(lambda: server.health()["connections"] == 0, STEP_S)
    status, body = await http(server.port, get(
        "/health", extra=f"Authorization: Bearer {TOKEN}\r\n".encode()))
    assert status == 200 and json.loads(body)["sessions"] == 0
    result = await asyncio.wait_for(stream_file(
        live.url, TONE, SR, StreamOptions(token=TOKEN, realtime=False)), CASE_S)
    assert result.close_code == 1000
    assert result.seq == list(range(math.ceil(TONE.size * FPS / SR)))
    await until(lambda: server.health()["connections"] == 0, STEP_S)


def assert_answer(received: list[wire.Message], close_code: int | None, code: str | None,
                  close: int) -> None:
    """Exactly the documented answer: one `error` with ``code`` as the last message then the
    close code (``code`` None: no error; a close of 1000 then follows a server `end` that
    counts every frame sent)."""
    errors = [m for m in received if isinstance(m, wire.Error)]
    assert [e.code for e in errors] == ([code] if code else []), [e.message for e in errors]
    assert close_code == close
    if errors:
        assert received[-1] is errors[0]
        assert len(errors[0].message) <= wire.MAX_ERROR_MESSAGE_CHARS
        assert "Traceback" not in errors[0].message
    if close == 1000:
        frames = [m for m in received if isinstance(m, wire.Frame)]
        assert isinstance(received[-1], wire.ServerEnd)
        assert received[-1].frames == len(frames) > 0


# ------------------------------------------------------------------------------ the table
def refused(case_id: str, sends: list[Send], code: str, close: int = 1003) -> Any:
    return pytest.param(sends, code, close, id=case_id)


def served(case_id: str, sends: list[Send]) -> Any:
    return pytest.param(sends, None, 1000, id=case_id)


def dropped(case_id: str, sends: list[Send], close: int) -> Any:
    """Refused by the WebSocket layer itself: a close without an `error` message."""
    return pytest.param(sends, None, close, id=case_id)


def bad_hello(field: str, label: str, value: Any, code: str, close: int = 1003) -> Any:
    return refused(f"hello.{field}.{label}", [hello(**{field: value}), SPEAK, END], code, close)


def deep(n: int) -> bytes:
    return b"\x91" * n + b"\xc0"  # [[[...[nil]...]]]


HELLO_PAIRS = [(pack("protocol"), pack(1)), (pack("sample_rate"), pack(SR)),
               (pack("encoding"), pack("pcm_s16le")), (pack("token"), pack(TOKEN))]
EXT = msgpack.ExtType(5, b"\x01\x02")

FRAMING = [
    refused("text.before_hello", ["hello"], "text_frame"),
    refused("text.json_hello", [json.dumps(hello_map())], "text_frame"),
    refused("text.empty", [""], "text_frame"),
    refused("text.after_hello", [hello(), "audio"], "text_frame"),
    refused("text.fragmented", [Fragments("x" * 1000, 50)], "text_frame"),
    dropped("text.not_utf8", [Text(b"\xff\xfe\x00")], 1007),
    refused("binary.empty", [b""], "bad_msgpack"),
    refused("binary.never_used_byte", [b"\xc1"], "bad_msgpack"),
    refused("binary.truncated_hello", [hello()[:-3]], "bad_msgpack"),
    refused("binary.trailing_byte", [hello() + b"\x00"], "bad_msgpack"),
    refused("binary.two_hellos_in_one", [hello() + hello()], "bad_msgpack"),
    refused("binary.trailing_after_audio", [hello(), SPEAK + b"\xc0"], "bad_msgpack"),
    refused("size.limit_plus_1_before_hello", [b"\x00" * (LIMIT + 1)], "too_big", 1009),
    refused("size.limit_plus_1_fragmented", [hello(), Fragments(b"\x00" * (LIMIT + 1), 64)],
            "too_big", 1009),
    dropped("size.300k_refused_by_websockets", [hello(), b"\x00" * (300 * 1024)], 1009),
    dropped("size.300k_in_300_fragments", [hello(), Fragments(b"\x00" * (300 * 1024), 300)],
            1009),
    served("fragments.hello_byte_by_byte", [Fragments(hello(), 10_000), SPEAK, END]),
    served("fragments.audio_in_1000", [hello(), Fragments(SPEAK, 1000), END]),
]

FRAMES = [  # RFC 6455 violations: the WebSocket layer closes 1002 (1007: text not UTF-8)
    dropped("frame.unmasked", [Wire(ws_frame(2, hello(), masked=False))], 1002),
    dropped("frame.reserved_opcode", [Wire(ws_frame(3, b"x"))], 1002),
    dropped("frame.rsv1_without_extension", [Wire(ws_frame(2, hello(), rsv=4))], 1002),
    dropped("frame.ping_of_126_bytes", [Wire(ws_frame(9, b"p" * 126))], 1002),
    dropped("frame.fragmented_ping", [Wire(ws_frame(9, b"p", fin=False))], 1002),
    dropped("frame.continuation_without_start", [Wire(ws_frame(0, hello()))], 1002),
    dropped("frame.new_message_inside_fragments",
            [Wire(ws_frame(2, hello()[:5], fin=False) + ws_frame(2, hello()))], 1002),
    dropped("frame.close_code_999", [Wire(ws_frame(8, (999).to_bytes(2, "big")))], 1002),
    dropped("frame.close_reason_not_utf8",
            [Wire(ws_frame(8, (1000).to_bytes(2, "big") + b"\xff"))], 1007),
]

MSGPACK = [
    refused("msgpack.nesting_10000", [deep(10_000)], "bad_msgpack"),
    refused("msgpack.nesting_10000_maps", [b"\x81\xa1k" * 10_000 + b"\xc0"], "bad_msgpack"),
    refused("msgpack.nesting_10000_in_unknown_field",
            [raw_map([(pack("type"), pack("hello")), *HELLO_PAIRS, (pack("x"), deep(10_000))])],
            "bad_msgpack"),
    served("msgpack.nesting_1000_in_unknown_field",
           [raw_map([(pack("type"), pack("hello")), *HELLO_PAIRS, (pack("x"), deep(1000))]),
            SPEAK, END]),
    refused("msgpack.map32_claims_2e32", [b"\xdf\xff\xff\xff\xff"], "bad_msgpack"),
    refused("msgpack.array32_claims_2e32", [b"\xdd\xff\xff\xff\xff"], "bad_msgpack"),
    refused("msgpack.str32_claims_4GiB", [b"\xdb\xff\xff\xff\xff"], "bad_msgpack"),
    refused("msgpack.bin32_claims_4GiB_as_data",
            [hello(), b"\x82" + pack("type") + pack("audio") + pack("data") + b"\xc6\xff\xff\xff"
             b"\xff"], "bad_msgpack"),
    refused("msgpack.map32_claims_2e32_in_hello",
            [raw_map([(pack("type"), pack("hello")), *HELLO_PAIRS,
                      (pack("x"), b"\xdf\xff\xff\xff\xff")])], "bad_msgpack"),
    refused("msgpack.250k_nils_as_audio_data",
            [hello(), pack({"type": "audio", "data": [None] * 250_000})], "bad_field_type"),
    served("msgpack.250k_nils_in_unknown_field", [hello(x=[None] * 250_000), SPEAK, END]),
    served("msgpack.20000_unknown_keys",
           [hello(**{f"k{i}": i for i in range(20_000)}), SPEAK, END]),
    refused("msgpack.ext_as_message", [pack(EXT)], "not_a_map"),
    refused("msgpack.ext_as_type", [pack({"type": EXT})], "bad_field_type"),
    refused("msgpack.ext_as_audio_data", [hello(), pack({"type": "audio", "data": EXT})],
            "bad_field_type"),
    refused("msgpack.timestamp_as_sample_rate",
            [hello(sample_rate=msgpack.Timestamp(16000))], "bad_field_type"),
    refused("msgpack.timestamp_of_3_bytes", [b"\xc7\x03\xff\x00\x00\x00"], "bad_msgpack"),
    served("msgpack.ext_in_unknown_field", [hello(x=EXT), SPEAK, END]),
    refused("msgpack.timestamp_key", [b"\x81\xd6\xff\x00\x00\x00\x01\x01"], "not_a_map"),
    refused("msgpack.utf8_invalid_value", [b"\x81\xa4type\xa5hel\xffo"], "bad_msgpack"),
    refused("msgpack.utf8_invalid_key", [b"\x81\xa4ty\xfe\xa5hello"], "bad_msgpack"),
    refused("msgpack.utf8_surrogate_identity",
            [raw_map([(pack("type"), pack("hello")), *HELLO_PAIRS,
                      (pack("identity"), b"\xa3\xed\xa0\x80")])], "bad_msgpack"),
    refused("msgpack.utf8_overlong_type", [b"\x81\xa4type\xa2\xc0\xaf"], "bad_msgpack"),
    served("msgpack.duplicate_type_last_wins",
           [raw_map([(pack("type"), pack("audio")), (pack("type"), pack("hello")),
                     *HELLO_PAIRS]), SPEAK, END]),
    refused("msgpack.duplicate_sample_rate_last_wins",
            [raw_map([(pack("type"), pack("hello")), *HELLO_PAIRS,
                      (pack("sample_rate"), pack(4000))])], "bad_value"),
    refused("msgpack.int_key", [pack({1: "hello", "type": "hello"})], "not_a_map"),
    refused("msgpack.bin_key", [raw_map([(pack(b"type"), pack("hello"))])], "not_a_map"),
    refused("msgpack.nil_key", [raw_map([(pack(None), pack("hello"))])], "not_a_map"),
    refused("msgpack.array_key", [raw_map([(pack([1]), pack("hello"))])], "bad_msgpack"),
    refused("msgpack.top_nil", [pack(None)], "not_a_map"),
    refused("msgpack.top_string", [pack("hello")], "not_a_map"),
    refused("msgpack.top_bin", [pack(hello())], "not_a_map"),
    refused("msgpack.top_float", [pack(1.5)], "not_a_map"),
    refused("msgpack.empty_map", [pack({})], "missing_field"),
    refused("msgpack.type_nil", [pack({"type": None})], "bad_field_type"),
    refused("msgpack.type_int", [pack({"type": 1})], "bad_field_type"),
    refused("msgpack.type_bin", [pack({"type": b"hello"})], "bad_field_type"),
    refused("msgpack.type_empty", [pack({"type": ""})], "unknown_type"),
    refused("msgpack.type_upper_case", [hello(type="HELLO")], "unknown_type"),
    refused("msgpack.type_of_a_server_message", [pack({"type": "ready"})], "unknown_type"),
]

HELLO_FIELDS = [
    bad_hello("protocol", "missing", DROP, "missing_field"),
    bad_hello("protocol", "nil", None, "bad_field_type"),
    bad_hello("protocol", "string", "1", "bad_field_type"),
    bad_hello("protocol", "float", 1.0, "bad_field_type"),
    bad_hello("protocol", "true", True, "bad_field_type"),
    bad_hello("protocol", "0", 0, "unsupported_protocol"),
    bad_hello("protocol", "-1", -1, "unsupported_protocol"),
    bad_hello("protocol", "2e64-1", 2**64 - 1, "unsupported_protocol"),
    bad_hello("sample_rate", "nil", None, "bad_field_type"),
    bad_hello("sample_rate", "float", 16000.0, "bad_field_type"),
    bad_hello("sample_rate", "true", True, "bad_field_type"),
    bad_hello("sample_rate", "array", [16000], "bad_field_type"),
    bad_hello("sample_rate", "0", 0, "bad_value"),
    bad_hello("sample_rate", "negative", -16000, "bad_value"),
    bad_hello("sample_rate", "7999", 7999, "bad_value"),
    bad_hello("sample_rate", "48001", 48001, "bad_value"),
    bad_hello("sample_rate", "not_a_multiple_of_25", 16010, "bad_value"),
    bad_hello("sample_rate", "2e64-1", 2**64 - 1, "bad_value"),
    bad_hello("sample_rate", "-2e63", -(2**63), "bad_value"),
    served("hello.sample_rate.8000", talk(sample_rate=8000)),
    served("hello.sample_rate.11025", talk(sample_rate=11025)),
    served("hello.sample_rate.48000_f32", talk(sample_rate=48000, encoding="pcm_f32le")),
    bad_hello("encoding", "missing", DROP, "missing_field"),
    bad_hello("encoding", "nil", None, "bad_field_type"),
    bad_hello("encoding", "int", 16, "bad_field_type"),
    bad_hello("encoding", "bin", b"pcm_s16le", "bad_field_type"),
    bad_hello("encoding", "s24", "pcm_s24le", "bad_value"),
    bad_hello("encoding", "upper_case", "PCM_S16LE", "bad_value"),
    bad_hello("encoding", "empty", "", "bad_value"),
    bad_hello("encoding", "nul_suffix", "pcm_s16le\x00", "bad_value"),
    served("hello.audio.nil", talk(audio=None)),  # optional fields may be nil: the default
    bad_hello("audio", "int", 1, "bad_field_type"),
    bad_hello("audio", "tcp", "tcp", "bad_value"),
    bad_hello("audio", "upper_case", "WS", "bad_value"),
    bad_hello("identity", "empty", "", "bad_value"),
    bad_hello("identity", "int", 7, "bad_field_type"),
    bad_hello("identity", "array", ["alice"], "bad_field_type"),
    bad_hello("identity", "upper_case", "ALICE", "unknown_identity"),
    bad_hello("identity", "10000_chars", "x" * 10_000, "unknown_identity"),
    served("hello.identity.nil", talk(identity=None)),
    served("hello.identity.auto", talk(identity="auto")),
    served("hello.identity.bob", talk(identity="bob")),
    served("hello.format.nil", talk(format=None)),
    bad_hello("format", "int", 16, "bad_field_type"),
    bad_hello("format", "f64", "f64", "bad_value"),
    bad_hello("format", "empty", "", "bad_value"),
    served("hello.format.coeffs_with_weights", talk(format="coeffs", weights=True)),
    served("hello.format.f32_with_weights", talk(format="f32", weights=True)),
    served("hello.weights.nil", talk(weights=None)),
    bad_hello("weights", "int", 1, "bad_field_type"),
    bad_hello("weights", "string", "true", "bad_field_type"),
    bad_hello("token", "missing", DROP, "bad_token", 1008),
    bad_hello("token", "nil", None, "bad_token", 1008),
    bad_hello("token", "empty", "", "bad_token", 1008),
    bad_hello("token", "wrong", "guess", "bad_token", 1008),
    bad_hello("token", "prefix_of_the_right_one", TOKEN[:-1], "bad_token", 1008),
    bad_hello("token", "right_one_and_more", TOKEN + "x", "bad_token", 1008),
    bad_hello("token", "non_ascii", "töken", "bad_token", 1008),
    bad_hello("token", "int", 123, "bad_field_type"),
    bad_hello("token", "bin", TOKEN.encode(), "bad_field_type"),
    served("hello.unknown_fields_are_ignored",
           talk(seed=5, transport="ws", version=2, extra={"a": [1, {"b": None}]})),
]

ORDER = [
    refused("order.end_before_hello", [END], "hello_expected"),
    refused("order.interrupt_before_hello", [INTERRUPT], "hello_expected"),
    refused("order.identity_before_hello", [pack({"type": "identity", "identity": "bob"})],
            "hello_expected"),
    refused("order.offer_before_hello", [pack({"type": "offer", "sdp": "v=0"})],
            "hello_expected"),
    refused("order.malformed_audio_before_hello", [pack({"type": "audio", "data": "x"})],
            "bad_field_type"),  # a message is decoded before its place is checked
    refused("order.hello_after_audio", [hello(), SPEAK, hello()], "duplicate_hello"),
    refused("order.hello_after_end", [hello(), SPEAK, then_end(hello())], "duplicate_hello"),
    refused("order.end_twice", [hello(), SPEAK, then_end(END)], "unexpected_message"),
    refused("order.empty_audio_after_end", [hello(), SPEAK, then_end(audio(b""))],
            "unexpected_message"),
    refused("order.offer_after_end",
            [hello(), SPEAK, then_end(pack({"type": "offer", "sdp": "x"}))],
            "unexpected_message"),
    refused("order.garbage_after_end", [hello(), SPEAK, then_end(b"\xc1")], "bad_msgpack"),
    refused("order.text_after_end", [hello(), SPEAK, then_end(b"end", opcode=1)], "text_frame"),
    refused("order.audio_with_webrtc_hello", [hello(audio="webrtc", sample_rate=48000), SPEAK],
            "unexpected_message"),
    served("order.identity_and_interrupt_after_end",
           [hello(), SPEAK, then_end(pack({"type": "identity", "identity": "bob"})), INTERRUPT]),
    served("order.interrupt_before_any_audio", [hello(), INTERRUPT, SPEAK, END]),
    served("order.200_interrupts", [hello(), SPEAK, *[INTERRUPT] * 200, SPEAK, END]),
    served("order.50_identity_switches",
           [hello(), *[pack({"type": "identity", "identity": n}) for n in ("alice", "bob") * 25],
            SPEAK, END]),
    refused("order.identity_auto_mid_stream",
            [hello(), SPEAK, pack({"type": "identity", "identity": "auto"})], "unknown_identity"),
    refused("order.identity_empty_mid_stream",
            [hello(), SPEAK, pack({"type": "identity", "identity": ""})], "bad_value"),
    refused("order.identity_message_without_field", [hello(), pack({"type": "identity"})],
            "missing_field"),
]

AUDIO = [
    refused("audio.s16_one_byte", [hello(), audio(b"\x00")], "bad_audio"),
    refused("audio.s16_odd_length", [hello(), audio(bytes(16_001))], "bad_audio"),
    refused("audio.f32_two_bytes", [HELLO_F32, audio(b"\x00\x00")], "bad_audio"),
    refused("audio.f32_4002_bytes", [HELLO_F32, audio(bytes(4002))], "bad_audio"),
    refused("audio.f32_minus_inf", [HELLO_F32, audio(f32(0.0, -np.inf))], "bad_audio"),
    refused("audio.f32_quiet_nan_payload", [HELLO_F32, audio(b"\x01\x00\xc0\x7f")], "bad_audio"),
    refused("audio.f32_signalling_nan", [HELLO_F32, audio(b"\x01\x00\x80\x7f")], "bad_audio"),
    refused("audio.f32_nan_in_last_of_a_second",
            [HELLO_F32, audio(f32(*[0.0] * (SR - 1), np.nan))], "bad_audio"),
    refused("audio.f32_2_5", [HELLO_F32, audio(f32(2.5))], "bad_audio"),
    refused("audio.f32_max_float", [HELLO_F32, audio(f32(-3.4e38))], "bad_audio"),
    served("audio.f32_exactly_2", [HELLO_F32, audio(f32(2.0, -2.0) * 800), SPEAK_F32, END]),
    served("audio.f32_subnormal_and_minus_zero",
           [HELLO_F32, audio(f32(1e-45, -0.0) * 800), SPEAK_F32, END]),
    served("audio.s16_full_scale_square",
           [hello(), audio(np.tile(np.array([32767, -32768], "<i2"), 2000).tobytes()), END]),
    served("audio.empty", [hello(), audio(b""), SPEAK, END]),
    served("audio.100_empty_messages", [hello(), *[audio(b"")] * 100, SPEAK, END]),
    refused("audio.data_string", [hello(), pack({"type": "audio", "data": "AAAA"})],
            "bad_field_type"),
    refused("audio.data_nil", [hello(), pack({"type": "audio", "data": None})], "bad_field_type"),
    refused("audio.data_int", [hello(), pack({"type": "audio", "data": 0})], "bad_field_type"),
    refused("audio.data_missing", [hello(), pack({"type": "audio"})], "missing_field"),
    served("audio.exactly_1s_s16", [hello(), audio(bytes(2 * SR)), END]),
    served("audio.exactly_1s_48k_f32",
           [hello(sample_rate=48000, encoding="pcm_f32le"), audio(bytes(4 * 48000)), END]),
    refused("audio.1s_and_a_sample_48k_f32",
            [hello(sample_rate=48000, encoding="pcm_f32le"), audio(bytes(4 * 48001))],
            "audio_too_long", 1009),
    refused("audio.declared_8k_sent_1s_of_16k", [hello(sample_rate=8000), audio(bytes(2 * SR))],
            "audio_too_long", 1009),
    served("audio.declared_s16_sent_f32_bytes",  # any even length is s16: it cannot tell
           [hello(), audio(encode_pcm(TONE, "pcm_f32le")), END]),
    refused("audio.declared_f32_sent_s16_bytes",  # most s16 pairs are no float within ±2
            [HELLO_F32, audio(encode_pcm(TONE, "pcm_s16le"))], "bad_audio"),
]

CASES = [*FRAMING, *FRAMES, *MSGPACK, *HELLO_FIELDS, *ORDER, *AUDIO]


@pytest.mark.parametrize(("sends", "code", "close"), CASES)
async def test_abuse_gets_the_documented_answer(live: Live, sends: list[Send], code: str | None,
                                                close: int) -> None:
    received, close_code = await exchange(live, sends)
    assert_answer(received, close_code, code, close)
    await assert_healthy(live)


async def test_the_error_comes_last_even_while_frames_stream(live: Live) -> None:
    """A bad message while the server is sending a batch of frames: the `error` must still go
    out, after those frames, with nothing behind it but the close. The client holds its reading
    for a moment so that the server is mid-batch when the bad message arrives (it used to close
    1003 with no `error`, or send frames after it)."""
    for attempt in range(24):
        ws = await open_ws(live)
        await ws.send(hello(format="f32"))  # 32 KB frames: a batch takes several writes
        await ws.send(audio(encode_pcm(tone(SR), "pcm_s16le")))
        ws.transport.pause_reading()
        await asyncio.sleep(0.01 * (1 + attempt % 3))
        await ws.send(b"\xc1")
        await asyncio.sleep(0.01 * (1 + attempt % 3))
        ws.transport.resume_reading()
        received, close_code = await asyncio.wait_for(read_to_close(ws, STEP_S), CASE_S)
        assert_answer(received, close_code, "bad_msgpack", 1003)
    await assert_healthy(live)


# ------------------------------------------------------------------------------------ HTTP
HTTP_CASES = [  # what test_static.py does not already send
    pytest.param(get("/..%2f..%2fetc/passwd"), 404, id="encoded_slash_traversal"),
    pytest.param(get("/assets/..%2f..%2fpyproject.toml"), 404, id="encoded_slash_under_assets"),
    pytest.param(get("/%2e%2e/%2e%2e/pyproject.toml"), 404, id="encoded_dots"),
    pytest.param(get("/assets/%2e%2e/pyproject.toml"), 404, id="encoded_dots_under_assets"),
    pytest.param(get("/%252e%252e/pyproject.toml"), 404, id="double_encoded_dots"),
    pytest.param(get("/assets/..%5cpyproject.toml"), 404, id="encoded_backslash"),
    pytest.param(get("/..\\..\\pyproject.toml"), 404, id="backslashes"),
    pytest.param(get("//etc/passwd"), 404, id="double_slash_absolute"),
    pytest.param(get("/" + "../" * 2000 + "etc/passwd"), 404, id="2000_dot_dot_segments"),
    pytest.param(get("http://127.0.0.1/../pyproject.toml"), 404, id="absolute_form_traversal"),
    pytest.param(get("/assets/facecap.glb%00.png"), 400, id="nul_before_an_extension"),
    pytest.param(get("/%c0%ae%c0%ae/pyproject.toml"), 400, id="overlong_utf8_dots"),
    pytest.param(get("/" + "a" * 8000), 404, id="8000_char_url"),
    pytest.param(get("/" + "a" * 9000), 414, id="9000_char_url"),
    pytest.param(get("/", extra=b"".join(b"X-%d: y\r\n" % i for i in range(200))), 431,
                 id="200_headers"),
    pytest.param(get("/", extra=b"X: " + b"y" * 9000 + b"\r\n"), 431, id="9000_char_header"),
    pytest.param(get("/", b"TRACE"), 405, id="TRACE"),
    pytest.param(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405, id="CONNECT"),
    pytest.param(get("/", b"PROPFIND"), 405, id="PROPFIND"),
    pytest.param(get("/health", b"get"), 405, id="lower_case_get"),
    # refused by websockets before the server sees them: closed without an answer
    pytest.param(get("/health", b"POST", b"Content-Length: 5\r\n") + b"hello", None,
                 id="POST_with_a_body"),
    pytest.param(get("/", extra=b"Transfer-Encoding: chunked\r\n"), None, id="chunked"),
    pytest.param(get("/caf\xc3\xa9".encode("latin-1")), None, id="non_ascii_path"),
    pytest.param(b"GET / HTTP/2.0\r\n\r\n", None, id="HTTP_2_request_line"),
    pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32) + b"\r\n\r\n", None,
                 id="TLS_hello_on_plain_HTTP"),
]


@pytest.mark.parametrize(("request_bytes", "status"), HTTP_CASES)
async def test_http_abuse_gets_4xx_never_a_file_or_5xx(live: Live, request_bytes: bytes,
                                                        status: int | None) -> None:
    got, body = await http(live.server.port, request_bytes)
    assert got == status
    assert b"Traceback" not in body and b"[project]" not in body and b"root:" not in body
    await assert_healthy(live)


# ------------------------------------------------------------------------------ ping floods
async def assert_served_meanwhile(live: Live) -> None:
    """Another client completes a session and /health answers, while one connection is
    still busy (so the server is not back to no connection)."""
    result = await asyncio.wait_for(stream_file(
        live.url, TONE, SR, StreamOptions(token=TOKEN, realtime=False)), CASE_S)
    assert result.close_code == 1000 and len(result.seq) == math.ceil(TONE.size * FPS / SR)
    status, _ = await http(live.server.port, get("/health"))
    assert status == 200


async def test_a_ping_flood_is_answered_and_others_are_served_meanwhile(live: Live) -> None:
    ws = await open_ws(live)
    await ws.send(hello())
    assert isinstance(wire.decode(await asyncio.wait_for(ws.recv(), STEP_S),
                                  direction="to_client"), wire.Ready)

    async def flood() -> float:
        started = time.monotonic()
        pongs = [await ws.ping(i.to_bytes(4, "big")) for i in range(5000)]
        await asyncio.wait_for(asyncio.gather(*pongs), 10.0)
        return time.monotonic() - started

    flooding = asyncio.create_task(flood())
    await assert_served_meanwhile(live)  # a session of someone else, during the flood
    assert await asyncio.wait_for(flooding, 15.0) < 10.0
    for item in (SPEAK, END):  # and the flooder's own session goes on
        await ws.send(item)
    received, close_code = await asyncio.wait_for(read_to_close(ws, STEP_S), CASE_S)
    assert_answer(received, close_code, None, 1000)
    await assert_healthy(live)


async def test_a_ping_flood_from_a_client_that_reads_nothing_is_not_buffered(live: Live) -> None:
    """websockets answers each ping at once; a peer that never reads must not grow the
    server's write buffer (the pongs) by what it sends: past MAX_UNSENT_BYTES the server stops
    reading from it."""
    source = new_address()
    ws = await open_ws(live, source)
    await ws.send(hello())
    ws.transport.pause_reading()  # from now on it takes nothing
    (conn,) = [c for c in live.server._connections.values() if c.address == source]
    buffered: list[int] = []
    started, n = time.monotonic(), 0
    while time.monotonic() - started < 1.5 and ws.transport.get_write_buffer_size() < 32 << 20:
        for _ in range(500):
            ws.protocol.send_ping(n.to_bytes(8, "big") * 15)  # 120-byte pings, no waiters
            n += 1
        ws.send_data()
        await asyncio.sleep(0)
        buffered.append(conn.ws.transport.get_write_buffer_size())
    assert n > 20_000  # megabytes of pings: unbounded, the server held ~10 MB of pongs
    assert max(buffered) < MAX_UNSENT_BYTES + (1 << 20), max(buffered)  # + one read's pongs
    ws.transport.abort()
    await assert_healthy(live)


# ------------------------------------------------------------------------------ fuzzed sessions
def mutate(rng: random.Random, data: bytes) -> bytes:
    how = rng.randrange(4)
    if how == 0 and data:  # flip one byte
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if how == 1:  # cut short
        return data[: rng.randrange(len(data) + 1)]
    if how == 2:  # junk after
        return data + rng.randbytes(rng.randrange(1, 9))
    return data[: len(data) // 2] + rng.randbytes(rng.randrange(1, 5)) + data[len(data) // 2 :]


async def test_fuzzed_sessions_never_end_internal_and_the_server_stays_healthy(
        live: Live) -> None:
    """60 sessions of valid messages, some bytes flipped, cut or spliced, over real sockets
    (the sans-I/O core gets 600 in test_hostile.py): each ends as a client error or a 1000."""
    rng = random.Random(1234)
    pool = [hello(), HELLO_F32, hello(identity="auto"), hello(format="coeffs"),
            hello(sample_rate=48000), SPEAK, SPEAK_F32, INTERRUPT, END,
            pack({"type": "identity", "identity": "bob"}), audio(f32(np.nan))]

    def session() -> list[Send]:
        sends = [rng.choice(pool[:5]), *(rng.choice(pool) for _ in range(rng.randrange(1, 6)))]
        return [mutate(rng, s) if rng.random() < 0.4 else s for s in sends] + [END]

    async def one(sends: list[Send]) -> tuple[str | None, int | None]:
        received, close_code = await exchange(live, sends)
        errors = [m.code for m in received if isinstance(m, wire.Error)]
        assert len(errors) <= 1
        return (errors[0] if errors else None), close_code

    outcomes: list[tuple[str | None, int | None]] = []
    for _ in range(10):
        outcomes += await asyncio.gather(*(one(session()) for _ in range(6)))
    for code, close_code in outcomes:
        assert code is None or code in CLIENT_ERRORS, code
        assert close_code in (1000, 1003, 1008, 1009), (code, close_code)
        assert (code is None) == (close_code == 1000), (code, close_code)
    assert {c for _, c in outcomes} >= {1000, 1003}  # the fuzz reached both ends
    await assert_healthy(live)


# ------------------------------------------------------------------------------ leaks
def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def raw_socket(live: Live, data: bytes = b"") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.bind((new_address(), 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", live.server.port)), STEP_S)
    if data:
        await asyncio.wait_for(loop.sock_sendall(sock, data), STEP_S)
    return sock


async def reset_before_http(live: Live) -> None:
    (await raw_socket(live)).close()  # SO_LINGER 0: a TCP reset


async def reset_mid_http(live: Live) -> None:
    sock = await raw_socket(live, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
    await asyncio.sleep(0.01)
    sock.close()


async def reset_mid_hello(live: Live) -> None:
    ws = await open_ws(live)
    frame = ws_frame(2, hello())
    ws.transport.write(frame[: len(frame) // 2])
    await asyncio.sleep(0.01)
    ws.transport.abort()


async def reset_mid_stream(live: Live) -> None:
    ws = await open_ws(live)
    await ws.send(hello())
    await asyncio.wait_for(ws.recv(), STEP_S)
    for i in range(0, TONE.size, 800):
        await ws.send(audio(encode_pcm(TONE[i : i + 800], "pcm_s16le")))
    await asyncio.wait_for(ws.recv(), STEP_S)  # frames are on their way
    ws.transport.abort()


async def eof_mid_audio_frame(live: Live) -> None:
    ws = await open_ws(live)
    await ws.send(hello())
    await asyncio.wait_for(ws.recv(), STEP_S)
    await ws.send(SPEAK)
    frame = ws_frame(2, SPEAK)
    ws.transport.write(frame[: len(frame) // 3])
    ws.transport.close()  # a FIN in the middle of a frame, no close handshake


async def reset_while_flushing(live: Live) -> None:
    ws = await open_ws(live)
    for item in (hello(format="f32"), SPEAK, SPEAK, END):
        await ws.send(item)
    await asyncio.wait_for(ws.recv(), STEP_S)
    ws.transport.abort()


async def test_100_abrupt_disconnects_leak_nothing(live: Live) -> None:
    server = live.server
    await until(lambda: server.health()["connections"] == 0, STEP_S)
    fds, tasks = open_fds(), len(asyncio.all_tasks())
    kinds = [reset_before_http, reset_mid_http, reset_mid_hello, reset_mid_stream,
             eof_mid_audio_frame, reset_while_flushing]
    for batch in range(10):
        await asyncio.wait_for(asyncio.gather(
            *(kinds[(batch * 10 + i) % len(kinds)](live) for i in range(10))), CASE_S)
    await until(lambda: not server._connections, CASE_S)
    admission = server._admission
    assert (admission.sessions, admission.pending, admission._per_address) == (0, 0, {})
    assert server.health()["connections"] == 0
    await until(lambda: server.engine.queue_depth == 0 and not server.engine._seeds, STEP_S)
    await until(lambda: open_fds() <= fds + 3, STEP_S)
    await until(lambda: len(asyncio.all_tasks()) <= tasks, STEP_S)
    await assert_healthy(live)


# ------------------------------------------------------------------------------ SIGTERM
async def test_sigterm_closes_every_client_with_1001_within_a_second(live: Live) -> None:
    """Last in the module: it ends the server."""
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    waiting = await open_ws(live)  # no hello yet
    streaming = await open_ws(live)
    await streaming.send(hello())
    await asyncio.wait_for(streaming.recv(), STEP_S)
    await streaming.send(SPEAK)
    idle = await open_ws(live)  # a session that sent no audio
    await idle.send(hello(format="coeffs"))
    await asyncio.wait_for(idle.recv(), STEP_S)
    await until(lambda: live.server.health()["connections"] == 3, STEP_S)
    port = live.server.port
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(live.task, 5.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    for ws in (waiting, streaming, idle):
        _, close_code = await asyncio.wait_for(read_to_close(ws, STEP_S), CASE_S)
        assert close_code == 1001
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), STEP_S)
