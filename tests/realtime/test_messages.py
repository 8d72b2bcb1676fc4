"""Protocol v1 messages: golden fixtures, canonical encoding, round trips, every rejection."""

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

from realtime import messages as wire
from realtime.errors import CloseCode, ProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocol"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CLASSES: dict[tuple[str, str], type[Any]] = {
    ("to_server", c.type): c
    for c in (wire.Hello, wire.Audio, wire.Offer, wire.Identity, wire.Interrupt, wire.End)
} | {
    ("to_client", c.type): c
    for c in (wire.Ready, wire.Answer, wire.Frame, wire.Stats, wire.Error, wire.ServerEnd)
}


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$hex"}:
        return bytes.fromhex(value["$hex"])
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    return value


def message_from_manifest(entry: dict[str, Any]) -> wire.Message:
    content = dict(entry["message"])
    cls = CLASSES[(entry["direction"], content.pop("type"))]
    kwargs = {k: from_json(v) for k, v in content.items()}
    if "mesh" in kwargs:
        kwargs["mesh"] = wire.Mesh(**{k: from_json(v) for k, v in content["mesh"].items()})
    if "basis" in kwargs:
        kwargs["basis"] = wire.Basis(**{k: from_json(v) for k, v in content["basis"].items()})
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
    assert wire.decode(data, direction=entry["direction"]) == expected


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST["fixtures"] if e["canonical"]], ids=lambda e: e["name"]
)
def test_fixture_is_canonical_encoding(entry: dict[str, Any]) -> None:
    data = (FIXTURES / entry["file"]).read_bytes()
    assert wire.encode(message_from_manifest(entry)) == data


@pytest.mark.parametrize("entry", MANIFEST["invalid"], ids=lambda e: e["name"])
def test_invalid_fixture_is_rejected(entry: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.decode((FIXTURES / entry["file"]).read_bytes(), direction=entry["direction"])
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
    data = wire.encode(wire.Identity(identity="talker_03"))
    assert data.hex(" ") == (
        "82 a4 74 79 70 65 a8 69 64 65 6e 74 69 74 79 a8 69 64 65 6e 74 69 74 79 "
        "a9 74 61 6c 6b 65 72 5f 30 33"
    )
    text = (Path(__file__).resolve().parents[2] / "PROTOCOL.md").read_text()
    assert "82 a4 74 79 70 65 a8 69 64 65 6e 74 69 74 79" in text


# ------------------------------------------------------------------ encode/decode


def test_canonical_key_order_type_first_and_nil_omitted() -> None:
    frame = wire.Frame(seq=0, t=0.0, vertices=b"\0" * 6, latency_ms=12.5)
    packed = msgpack.unpackb(wire.encode(frame), raw=False)
    assert list(packed) == ["type", "seq", "t", "vertices", "latency_ms"]
    assert isinstance(packed["t"], float)


def test_decoder_accepts_int_for_float_and_nil_for_optional_and_ignores_unknown() -> None:
    data = msgpack.packb(
        {"type": "frame", "seq": 30, "t": 1, "vertices": b"\0" * 6, "weights": None,
         "latency_ms": 80, "future_field": [1, 2]},
        use_bin_type=True,
    )
    msg = wire.decode(data, direction="to_client")
    assert msg == wire.Frame(seq=30, t=1.0, vertices=b"\0" * 6, latency_ms=80.0)
    assert isinstance(msg, wire.Frame) and isinstance(msg.t, float)


def test_hello_defaults_filled_in() -> None:
    msg = wire.decode(hello_bytes(), direction="to_server")
    assert msg == wire.Hello(sample_rate=16000, encoding="pcm_s16le")
    assert isinstance(msg, wire.Hello)
    assert (msg.audio, msg.format, msg.weights, msg.identity, msg.token) == (
        "ws", "f16", False, None, None)


def test_direction_matters() -> None:
    data = wire.encode(wire.End())
    assert wire.decode(data, direction="to_server") == wire.End()
    with pytest.raises(ProtocolError, match="frames"):
        wire.decode(data, direction="to_client")  # a server `end` needs `frames`
    with pytest.raises(ProtocolError) as info:
        wire.decode(wire.encode(wire.Answer(sdp="x")), direction="to_server")
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
        wire.decode(hello_bytes(**over), direction="to_server")
    assert info.value.code == code
    assert words in info.value.message
    assert info.value.close_code == CloseCode.UNSUPPORTED


def test_nil_optional_fields_take_their_defaults() -> None:
    """PROTOCOL.md §1: optional fields may be absent or nil."""
    m = wire.decode(hello_bytes(audio=None, format=None, weights=None, identity=None),
                    direction="to_server")
    assert (m.audio, m.format, m.weights, m.identity) == ("ws", "f16", False, None)


def test_missing_protocol_is_an_error() -> None:
    data = msgpack.packb({"type": "hello", "sample_rate": 16000, "encoding": "pcm_s16le"})
    with pytest.raises(ProtocolError, match="'protocol'") as info:
        wire.decode(data, direction="to_server")
    assert info.value.code == "missing_field"


def test_text_and_non_string_keys_rejected() -> None:
    with pytest.raises(ProtocolError) as info:
        wire.decode("hello", direction="to_server")  # type: ignore[arg-type]
    assert info.value.code == "text_frame"
    with pytest.raises(ProtocolError) as info:
        wire.decode(msgpack.packb({1: 2}), direction="to_server")
    assert info.value.code == "not_a_map"
    with pytest.raises(ProtocolError) as info:
        wire.decode(msgpack.packb({"type": 3}), direction="to_server")
    assert info.value.code == "bad_field_type"


def test_mesh_checks() -> None:
    template = np.zeros(9, "<f4").tobytes()
    with pytest.raises(ProtocolError, match="mesh.template"):
        wire.Mesh(vertex_count=4, template=template, faces=b"")
    with pytest.raises(ProtocolError, match="mesh.faces"):
        wire.Mesh(vertex_count=3, template=template, faces=np.array([0, 1, 3], "<u4").tobytes())
    with pytest.raises(ProtocolError, match="mesh.faces"):
        wire.Mesh(vertex_count=3, template=template, faces=b"\0" * 8)
    ready = {"type": "ready", "protocol": 1, "session": "s", "fps": 30, "identities": ["a"],
             "identity": "a", "mesh": {"vertex_count": 3, "template": template},
             "blendshapes": []}
    with pytest.raises(ProtocolError, match="'mesh.faces'") as info:
        wire.decode(msgpack.packb(ready, use_bin_type=True), direction="to_client")
    assert info.value.code == "missing_field"
    with pytest.raises(ProtocolError, match="'identities' must be an array of strings"):
        wire.decode(msgpack.packb({**ready, "identities": [1]}), direction="to_client")


def test_frame_range_checks() -> None:
    with pytest.raises(ProtocolError, match="'seq'"):
        wire.Frame(seq=-1, t=0.0, vertices=b"\0" * 6, latency_ms=0.0)
    with pytest.raises(ProtocolError, match="'latency_ms'"):
        wire.Frame(seq=0, t=0.0, vertices=b"\0" * 6, latency_ms=float("inf"))
    with pytest.raises(ProtocolError, match="'vertices'"):
        wire.Frame(seq=0, t=0.0, vertices=b"\0" * 5, latency_ms=0.0)


def test_frame_carries_exactly_one_of_vertices_and_coeffs() -> None:
    with pytest.raises(ProtocolError, match="'vertices' must be present exactly when 'coeffs' "
                       "is absent, got 'both'") as info:
        wire.Frame(seq=0, t=0.0, vertices=b"\0" * 6, coeffs=b"\0" * 2, latency_ms=0.0)
    assert info.value.code == "bad_value"
    with pytest.raises(ProtocolError, match="got 'neither'"):
        wire.Frame(seq=0, t=0.0, latency_ms=0.0)
    with pytest.raises(ProtocolError, match="'coeffs' must be a non-empty multiple of 2 bytes"):
        wire.Frame(seq=0, t=0.0, coeffs=b"\0" * 3, latency_ms=0.0)
    with pytest.raises(ProtocolError, match="'coeffs'"):
        wire.Frame(seq=0, t=0.0, coeffs=b"", latency_ms=0.0)
    frame = wire.Frame(seq=0, t=0.0, coeffs=np.array([0.5, -1], "<f2").tobytes(), latency_ms=1.5)
    packed = msgpack.unpackb(wire.encode(frame), raw=False)
    assert list(packed) == ["type", "seq", "t", "latency_ms", "coeffs"]


def _mesh(vertex_count: int = 3) -> wire.Mesh:
    return wire.Mesh(vertex_count=vertex_count, template=b"\0" * 12 * vertex_count,
                     faces=b"")


def test_basis_checks() -> None:
    with pytest.raises(ProtocolError, match="'basis.names' must be a non-empty array"):
        wire.Basis(names=())
    with pytest.raises(ProtocolError, match="'basis.vectors' must be a multiple of 12 bytes"):
        wire.Basis(names=("a", "b"), vectors=b"\0" * 30)
    basis = wire.Basis(names=("a", "b"), vectors=b"\0" * 24)  # K*V*3 f16 for V=2
    wire.Ready(session="s", fps=30, identities=(), identity="a", mesh=_mesh(2), blendshapes=(),
               basis=basis)
    with pytest.raises(ProtocolError, match="'basis.vectors' must be 36 bytes"):
        wire.Ready(session="s", fps=30, identities=(), identity="a", mesh=_mesh(3),
                   blendshapes=(), basis=basis)
    with pytest.raises(ProtocolError, match="'lookahead_ms'"):
        wire.Ready(session="s", fps=30, identities=(), identity="a", mesh=_mesh(),
                   blendshapes=(), lookahead_ms=float("nan"))


def test_basis_without_vectors_leaves_them_out() -> None:
    """Nested maps follow the canonical rule too: a nil optional field is not written."""
    ready = wire.Ready(session="s", fps=30, identities=("a",), identity="a", mesh=_mesh(),
                       blendshapes=("jawOpen",), lookahead_ms=52,
                       basis=wire.Basis(names=("jawOpen",)))
    packed = msgpack.unpackb(wire.encode(ready), raw=False)
    assert list(packed)[-2:] == ["lookahead_ms", "basis"]
    assert packed["basis"] == {"names": ["jawOpen"]}
    assert isinstance(packed["lookahead_ms"], float)
    nil_vectors = msgpack.packb({**packed, "basis": {"names": ["jawOpen"], "vectors": None}},
                                use_bin_type=True)
    assert wire.decode(nil_vectors, direction="to_client") == ready


def test_coeffs_fixture_through_the_basis_is_the_vertex_fixture() -> None:
    """frame_coeffs applied to ready_basis_vectors gives frame_f32's vertices (as the viewer
    computes them, tests/web/protocol.test.mjs)."""
    def load(name: str) -> Any:
        return wire.decode((FIXTURES / f"{name}.msgpack").read_bytes(), direction="to_client")

    ready, coeffs, moved = load("ready_basis_vectors"), load("frame_coeffs"), load("frame_f32")
    assert ready.basis.vectors is not None and coeffs.coeffs is not None
    v, k = ready.mesh.vertex_count, len(ready.basis.names)
    vectors = np.frombuffer(ready.basis.vectors, "<f2").astype(np.float32).reshape(k, v, 3)
    c = np.frombuffer(coeffs.coeffs, "<f2").astype(np.float32)
    template = np.frombuffer(ready.mesh.template, "<f4").reshape(v, 3)
    vertices = template + np.einsum("k,kvc->vc", c, vectors)
    np.testing.assert_array_equal(vertices, np.frombuffer(moved.vertices, "<f4").reshape(v, 3))


def test_old_ready_and_hello_still_decode() -> None:
    """v1.1 fields are optional: a v1.0 server's ready has neither lookahead_ms nor basis."""
    entry = next(e for e in MANIFEST["fixtures"] if e["name"] == "ready")
    msg = wire.decode((FIXTURES / entry["file"]).read_bytes(), direction="to_client")
    assert isinstance(msg, wire.Ready) and msg.lookahead_ms is None and msg.basis is None


SAMPLE_MESSAGES: list[wire.Message] = [
    wire.Hello(sample_rate=8000, encoding="pcm_f32le", audio="webrtc", identity="auto"),
    wire.Audio(data=b""),
    wire.Stats(frames_sent=0, dropped_frames=0, skipped_hops=0, queue_depth=0,
            audio_received_s=0.0),
    wire.Frame(seq=2**40, t=1e6, vertices=b"\1" * 12, weights=b"", latency_ms=0.0),
    wire.Hello(sample_rate=44100, encoding="pcm_s16le", format="coeffs", weights=True),
    wire.Frame(seq=7, t=0.25, coeffs=np.linspace(-1, 1, 51).astype("<f2").tobytes(),
               latency_ms=80.0),
    wire.Ready(session="s", fps=30, identities=("a", "b"), identity="b", mesh=_mesh(2),
               blendshapes=(), lookahead_ms=0.0,
               basis=wire.Basis(names=("pc0", "pc1", "pc2"), vectors=b"\2" * 36)),
    wire.Ready(session="s", fps=30, identities=(), identity="a", mesh=_mesh(),
               blendshapes=("jawOpen", "mouthClose"), lookahead_ms=52.5,
               basis=wire.Basis(names=("jawOpen",))),
]


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES, ids=lambda m: m.type)
def test_round_trip(msg: wire.Message) -> None:
    direction: wire.Direction = "to_server" if isinstance(msg, wire.ClientMessage) else "to_client"
    assert wire.decode(wire.encode(msg), direction=direction) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_raises_only_protocol_error_on_random_bytes(data: bytes) -> None:
    for direction in ("to_server", "to_client"):
        try:
            wire.decode(data, direction=direction)  # type: ignore[arg-type]
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
     "vertices", "latency_ms", "code", "message", "frames", "frames_sent", "coeffs",
     "lookahead_ms", "basis"]
)


@settings(max_examples=300, deadline=None)
@given(type_names, st.dictionaries(field_names, wire_values, max_size=8))
def test_decode_raises_only_protocol_error_on_random_maps(
    kind: str, body: dict[str, Any]
) -> None:
    data = msgpack.packb({"type": kind, **body}, use_bin_type=True)
    for direction in ("to_server", "to_client"):
        try:
            msg = wire.decode(data, direction=direction)  # type: ignore[arg-type]
        except ProtocolError:
            continue
        assert wire.decode(wire.encode(msg), direction=direction) == msg  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["names", "vectors", "other"]),
                       wire_values | st.lists(st.text(max_size=4), max_size=3)
                       | st.sampled_from([b"\0" * 18, b"\0" * 36]), max_size=3),
       wire_values)
def test_decode_raises_only_protocol_error_on_random_basis(
    basis: dict[str, Any], lookahead: Any
) -> None:
    ready = {"type": "ready", "protocol": 1, "session": "s", "fps": 30, "identities": [],
             "identity": "a", "mesh": {"vertex_count": 3, "template": b"\0" * 36, "faces": b""},
             "blendshapes": [], "lookahead_ms": lookahead, "basis": basis}
    try:
        msg = wire.decode(msgpack.packb(ready, use_bin_type=True), direction="to_client")
    except ProtocolError:
        return
    assert wire.decode(wire.encode(msg), direction="to_client") == msg
