"""Protocol v1: golden fixtures, round trips, every rejection, and the server state machine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime import protocol as p
from realtime.errors import CloseCode, ProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocol"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CLASSES: dict[tuple[str, str], type[Any]] = {
    ("to_server", c.type): c for c in (p.Hello, p.Audio, p.Offer, p.Identity, p.Interrupt, p.End)
} | {
    ("to_client", c.type): c
    for c in (p.Ready, p.Answer, p.Frame, p.Stats, p.Error, p.ServerEnd)
}


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$hex"}:
        return bytes.fromhex(value["$hex"])
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    return value


def message_from_manifest(entry: dict[str, Any]) -> p.Message:
    content = dict(entry["message"])
    cls = CLASSES[(entry["direction"], content.pop("type"))]
    kwargs = {k: from_json(v) for k, v in content.items()}
    if "mesh" in kwargs:
        kwargs["mesh"] = p.Mesh(**{k: from_json(v) for k, v in content["mesh"].items()})
    return cls(**kwargs)  # type: ignore[no-any-return]


def hello_bytes(**over: Any) -> bytes:
    fields = {"type": "hello", "protocol": 1, "sample_rate": 16000, "encoding": "pcm_s16le"}
    return msgpack.packb({**fields, **over}, use_bin_type=True)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ golden fixtures


def test_manifest_covers_every_message_type() -> None:
    seen = {(e["direction"], e["message"]["type"]) for e in MANIFEST["fixtures"]}
    assert seen == set(CLASSES)


@pytest.mark.parametrize("entry", MANIFEST["fixtures"], ids=lambda e: e["name"])
def test_fixture_decodes_to_manifest_content(entry: dict[str, Any]) -> None:
    data = (FIXTURES / entry["file"]).read_bytes()
    expected = message_from_manifest(entry)
    assert p.decode(data, direction=entry["direction"]) == expected


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST["fixtures"] if e["canonical"]], ids=lambda e: e["name"]
)
def test_fixture_is_canonical_encoding(entry: dict[str, Any]) -> None:
    data = (FIXTURES / entry["file"]).read_bytes()
    assert p.encode(message_from_manifest(entry)) == data


@pytest.mark.parametrize("entry", MANIFEST["invalid"], ids=lambda e: e["name"])
def test_invalid_fixture_is_rejected(entry: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        p.decode((FIXTURES / entry["file"]).read_bytes(), direction=entry["direction"])
    assert info.value.code == entry["error"]
    assert info.value.close_code == entry["close_code"]


def test_fixture_script_reproduces_files() -> None:
    path = FIXTURES.parent / "make_protocol_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_protocol_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files, manifest = module.build()
    for name, data in files.items():
        assert (FIXTURES / name).read_bytes() == data, name
    assert module.manifest_text(manifest) == (FIXTURES / "manifest.json").read_text()


def test_worked_example_in_protocol_md() -> None:
    """The hex example in PROTOCOL.md is the real encoding."""
    data = p.encode(p.Identity(identity="talker_03"))
    assert data.hex(" ") == (
        "82 a4 74 79 70 65 a8 69 64 65 6e 74 69 74 79 a8 69 64 65 6e 74 69 74 79 "
        "a9 74 61 6c 6b 65 72 5f 30 33"
    )
    text = (Path(__file__).resolve().parents[2] / "PROTOCOL.md").read_text()
    assert "82 a4 74 79 70 65 a8 69 64 65 6e 74 69 74 79" in text


# ------------------------------------------------------------------ encode/decode


def test_canonical_key_order_type_first_and_nil_omitted() -> None:
    frame = p.Frame(seq=0, t=0.0, vertices=b"\0" * 6, latency_ms=12.5)
    wire = msgpack.unpackb(p.encode(frame), raw=False)
    assert list(wire) == ["type", "seq", "t", "vertices", "latency_ms"]
    assert isinstance(wire["t"], float)


def test_decoder_accepts_int_for_float_and_nil_for_optional_and_ignores_unknown() -> None:
    data = msgpack.packb(
        {"type": "frame", "seq": 30, "t": 1, "vertices": b"\0" * 6, "weights": None,
         "latency_ms": 80, "future_field": [1, 2]},
        use_bin_type=True,
    )
    msg = p.decode(data, direction="to_client")
    assert msg == p.Frame(seq=30, t=1.0, vertices=b"\0" * 6, latency_ms=80.0)
    assert isinstance(msg, p.Frame) and isinstance(msg.t, float)


def test_hello_defaults_filled_in() -> None:
    msg = p.decode(hello_bytes(), direction="to_server")
    assert msg == p.Hello(sample_rate=16000, encoding="pcm_s16le")
    assert isinstance(msg, p.Hello)
    assert (msg.audio, msg.format, msg.weights, msg.identity, msg.token) == (
        "ws", "f16", False, None, None)


def test_direction_matters() -> None:
    data = p.encode(p.End())
    assert p.decode(data, direction="to_server") == p.End()
    with pytest.raises(ProtocolError, match="frames"):
        p.decode(data, direction="to_client")  # a server `end` needs `frames`
    with pytest.raises(ProtocolError) as info:
        p.decode(p.encode(p.Answer(sdp="x")), direction="to_server")
    assert info.value.code == "unknown_type"


@pytest.mark.parametrize(
    ("over", "code", "words"),
    [
        ({"sample_rate": 7999}, "bad_value", "'sample_rate' must be an integer in 8000..48000"),
        ({"sample_rate": 48001}, "bad_value", "sample_rate"),
        ({"sample_rate": 16000.0}, "bad_field_type", "'sample_rate' must be an integer"),
        ({"encoding": "pcm_u8"}, "bad_value", "'encoding' must be one of"),
        ({"audio": "udp"}, "bad_value", "'audio'"),
        ({"format": "f64"}, "bad_value", "'format'"),
        ({"weights": 1}, "bad_field_type", "'weights' must be a boolean"),
        ({"token": 5}, "bad_field_type", "'token' must be a string"),
        ({"identity": ""}, "bad_value", "'identity'"),
        ({"protocol": 2}, "unsupported_protocol", "'protocol' must be 1"),
        ({"protocol": None}, "bad_field_type", "'protocol' must not be nil"),
    ],
)
def test_hello_field_errors_name_the_field(over: dict[str, Any], code: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.decode(hello_bytes(**over), direction="to_server")
    assert info.value.code == code
    assert words in info.value.message
    assert info.value.close_code == CloseCode.UNSUPPORTED


def test_missing_protocol_is_an_error() -> None:
    data = msgpack.packb({"type": "hello", "sample_rate": 16000, "encoding": "pcm_s16le"})
    with pytest.raises(ProtocolError, match="'protocol'") as info:
        p.decode(data, direction="to_server")
    assert info.value.code == "missing_field"


def test_text_and_non_string_keys_rejected() -> None:
    with pytest.raises(ProtocolError) as info:
        p.decode("hello", direction="to_server")  # type: ignore[arg-type]
    assert info.value.code == "text_frame"
    with pytest.raises(ProtocolError) as info:
        p.decode(msgpack.packb({1: 2}), direction="to_server")
    assert info.value.code == "not_a_map"
    with pytest.raises(ProtocolError) as info:
        p.decode(msgpack.packb({"type": 3}), direction="to_server")
    assert info.value.code == "bad_field_type"


def test_mesh_checks() -> None:
    template = np.zeros(9, "<f4").tobytes()
    with pytest.raises(ProtocolError, match="mesh.template"):
        p.Mesh(vertex_count=4, template=template, faces=b"")
    with pytest.raises(ProtocolError, match="mesh.faces"):
        p.Mesh(vertex_count=3, template=template, faces=np.array([0, 1, 3], "<u4").tobytes())
    with pytest.raises(ProtocolError, match="mesh.faces"):
        p.Mesh(vertex_count=3, template=template, faces=b"\0" * 8)
    ready = {"type": "ready", "protocol": 1, "session": "s", "fps": 30, "identities": ["a"],
             "identity": "a", "mesh": {"vertex_count": 3, "template": template},
             "blendshapes": []}
    with pytest.raises(ProtocolError, match="'mesh.faces'") as info:
        p.decode(msgpack.packb(ready, use_bin_type=True), direction="to_client")
    assert info.value.code == "missing_field"
    with pytest.raises(ProtocolError, match="'identities' must be an array of strings"):
        p.decode(msgpack.packb({**ready, "identities": [1]}), direction="to_client")


def test_frame_range_checks() -> None:
    with pytest.raises(ProtocolError, match="'seq'"):
        p.Frame(seq=-1, t=0.0, vertices=b"\0" * 6, latency_ms=0.0)
    with pytest.raises(ProtocolError, match="'latency_ms'"):
        p.Frame(seq=0, t=0.0, vertices=b"\0" * 6, latency_ms=float("inf"))
    with pytest.raises(ProtocolError, match="'vertices'"):
        p.Frame(seq=0, t=0.0, vertices=b"\0" * 5, latency_ms=0.0)


SAMPLE_MESSAGES: list[p.Message] = [
    p.Hello(sample_rate=8000, encoding="pcm_f32le", audio="webrtc", identity="auto"),
    p.Audio(data=b""),
    p.Stats(frames_sent=0, dropped_frames=0, skipped_hops=0, queue_depth=0,
            audio_received_s=0.0),
    p.Frame(seq=2**40, t=1e6, vertices=b"\1" * 12, weights=b"", latency_ms=0.0),
]


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES, ids=lambda m: m.type)
def test_round_trip(msg: p.Message) -> None:
    direction: p.Direction = "to_server" if isinstance(msg, p.ClientMessage) else "to_client"
    assert p.decode(p.encode(msg), direction=direction) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_raises_only_protocol_error_on_random_bytes(data: bytes) -> None:
    for direction in ("to_server", "to_client"):
        try:
            p.decode(data, direction=direction)  # type: ignore[arg-type]
        except ProtocolError as exc:
            assert exc.message and exc.close_code == CloseCode.UNSUPPORTED


wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
type_names = st.sampled_from(sorted({t for _, t in CLASSES}) + ["bogus"])
field_names = st.sampled_from(
    ["protocol", "sample_rate", "encoding", "audio", "identity", "format", "weights", "token",
     "data", "sdp", "session", "fps", "identities", "mesh", "blendshapes", "seq", "t",
     "vertices", "latency_ms", "code", "message", "frames", "frames_sent"]
)


@settings(max_examples=300, deadline=None)
@given(type_names, st.dictionaries(field_names, wire_values, max_size=8))
def test_decode_raises_only_protocol_error_on_random_maps(
    kind: str, body: dict[str, Any]
) -> None:
    data = msgpack.packb({"type": kind, **body}, use_bin_type=True)
    for direction in ("to_server", "to_client"):
        try:
            msg = p.decode(data, direction=direction)  # type: ignore[arg-type]
        except ProtocolError:
            continue
        assert p.decode(p.encode(msg), direction=direction) == msg  # type: ignore[arg-type]


# ------------------------------------------------------------------ ServerProtocol


def open_protocol(**config: Any) -> p.ServerProtocol:
    proto = p.ServerProtocol(p.ServerProtocolConfig(**config))
    proto.receive(hello_bytes(token="tok") if "token" in config else hello_bytes(), now=0.0)
    assert proto.state is p.ServerState.OPEN, proto.data_to_send()
    return proto


def sent(proto: p.ServerProtocol) -> list[p.Message]:
    return [p.decode(d, direction="to_client") for d in proto.data_to_send()]


def assert_failed(proto: p.ServerProtocol, code: str, close_code: int) -> None:
    out = sent(proto)
    assert len(out) == 1 and isinstance(out[0], p.Error), out
    assert out[0].code == code
    assert proto.close_code == close_code and proto.state is p.ServerState.CLOSED
    assert "Traceback" not in out[0].message


def test_hello_then_audio_events() -> None:
    proto = open_protocol()
    pcm = np.array([0, 16384, -32768], "<i2").tobytes()
    proto.receive(p.encode(p.Audio(data=pcm)), now=0.1)
    proto.receive(p.encode(p.Identity(identity="b")), now=0.2)
    proto.receive(p.encode(p.Interrupt()), now=0.3)
    proto.receive(p.encode(p.End()), now=0.4)
    events = proto.events_received()
    assert isinstance(events[0], p.Hello)
    assert isinstance(events[1], p.AudioReceived) and events[1].sample_rate_hz == 16000
    np.testing.assert_array_equal(events[1].samples, np.array([0.0, 0.5, -1.0], np.float32))
    assert events[2:] == [p.Identity(identity="b"), p.Interrupt(), p.End()]
    assert proto.state is p.ServerState.ENDING and proto.data_to_send() == []
    assert proto.events_received() == []


def test_hello_must_come_first() -> None:
    proto = p.ServerProtocol()
    proto.receive(p.encode(p.Audio(data=b"")), now=0.0)
    assert_failed(proto, "hello_expected", 1003)
    proto.receive(hello_bytes(), now=0.1)  # ignored after the close
    assert proto.events_received() == [] and proto.data_to_send() == []


def test_hello_exactly_once() -> None:
    proto = open_protocol()
    proto.receive(hello_bytes(), now=0.1)
    assert_failed(proto, "duplicate_hello", 1003)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_bad_token_closes_1008(token: str | None) -> None:
    proto = p.ServerProtocol(p.ServerProtocolConfig(token="tok"))
    proto.receive(hello_bytes(token=token), now=0.0)
    assert_failed(proto, "bad_token", 1008)
    assert proto.events_received() == []


def test_good_token_and_no_token_configured() -> None:
    open_protocol(token="tok")
    proto = p.ServerProtocol()
    proto.receive(hello_bytes(token="anything"), now=0.0)
    assert proto.state is p.ServerState.OPEN


def test_text_frame_closes_1003() -> None:
    proto = p.ServerProtocol()
    proto.receive('{"type": "hello"}', now=0.0)
    assert_failed(proto, "text_frame", 1003)


def test_message_too_big_closes_1009() -> None:
    proto = open_protocol(max_message_bytes=100)
    proto.receive(p.encode(p.Audio(data=b"\0" * 100)), now=0.1)
    assert_failed(proto, "too_big", 1009)


def test_more_than_one_second_of_audio_closes_1009() -> None:
    proto = open_protocol()
    proto.receive(p.encode(p.Audio(data=b"\0" * 32000)), now=0.1)  # exactly 1 s: fine
    assert len(proto.events_received()) == 2
    proto.receive(p.encode(p.Audio(data=b"\0" * 32002)), now=0.2)
    assert_failed(proto, "audio_too_long", 1009)


def test_bad_audio_closes_1003() -> None:
    proto = open_protocol()
    proto.receive(p.encode(p.Audio(data=b"\0" * 3)), now=0.1)
    assert_failed(proto, "bad_audio", 1003)


def test_audio_after_end_rejected() -> None:
    proto = open_protocol()
    proto.receive(p.encode(p.End()), now=0.1)
    proto.receive(p.encode(p.Interrupt()), now=0.2)  # control is still fine
    assert proto.state is p.ServerState.ENDING
    proto.receive(p.encode(p.Audio(data=b"\0\0")), now=0.3)
    assert_failed(proto, "unexpected_message", 1003)


def test_offer_only_for_webrtc_and_audio_only_for_ws() -> None:
    proto = open_protocol()
    proto.receive(p.encode(p.Offer(sdp="v=0")), now=0.1)
    assert_failed(proto, "unexpected_message", 1003)
    proto = p.ServerProtocol()
    proto.receive(hello_bytes(audio="webrtc"), now=0.0)
    proto.receive(p.encode(p.Offer(sdp="v=0")), now=0.1)
    assert proto.events_received()[1] == p.Offer(sdp="v=0")
    proto.receive(p.encode(p.Audio(data=b"\0\0")), now=0.2)
    assert_failed(proto, "unexpected_message", 1003)


def test_webrtc_refused_when_not_allowed() -> None:
    proto = p.ServerProtocol(p.ServerProtocolConfig(allow_webrtc=False))
    proto.receive(hello_bytes(audio="webrtc"), now=0.0)
    assert_failed(proto, "unsupported", 1003)


def test_unknown_identity() -> None:
    config = p.ServerProtocolConfig(identities=("a", "b"))
    proto = p.ServerProtocol(config)
    proto.receive(hello_bytes(identity="auto"), now=0.0)
    proto.receive(p.encode(p.Identity(identity="a")), now=0.1)
    assert len(proto.events_received()) == 2
    proto.receive(p.encode(p.Identity(identity="zed")), now=0.2)
    assert_failed(proto, "unknown_identity", 1003)
    proto = p.ServerProtocol(config)
    proto.receive(hello_bytes(identity="zed"), now=0.0)
    assert_failed(proto, "unknown_identity", 1003)


def test_server_full_and_finish() -> None:
    proto = p.ServerProtocol()
    proto.fail(ProtocolError("server_full", "no free slot", CloseCode.TRY_AGAIN_LATER))
    assert_failed(proto, "server_full", 1013)
    proto = open_protocol()
    assert proto.send(p.Answer(sdp="v=0"))
    proto.finish(frames=42)
    assert sent(proto) == [p.Answer(sdp="v=0"), p.ServerEnd(frames=42)]
    assert proto.close_code == 1000
    assert not proto.send(p.Answer(sdp="v=0"))
    assert proto.data_to_send() == []


def test_internal_error_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: bytes, *, direction: str) -> p.Message:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(p, "decode", boom)
    proto = p.ServerProtocol()
    proto.receive(hello_bytes(), now=0.0)
    out = proto.data_to_send()
    error = msgpack.unpackb(out[0], raw=False)
    assert error == {"type": "error", "code": "internal", "message": "internal server error"}
    assert proto.close_code == 1011
