"""Protocol v1, the sans-I/O server connection: ordering, limits, token, identity, closes."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from realtime import messages as wire
from realtime import protocol
from realtime.errors import CloseCode, ProtocolError


def hello_bytes(**over: Any) -> bytes:
    fields = {"type": "hello", "protocol": 1, "sample_rate": 16000, "encoding": "pcm_s16le"}
    return msgpack.packb({**fields, **over}, use_bin_type=True)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ ServerProtocol


def open_protocol(**config: Any) -> protocol.ServerProtocol:
    proto = protocol.ServerProtocol(protocol.ServerProtocolConfig(**config))
    proto.receive(hello_bytes(token="tok") if "token" in config else hello_bytes(), now=0.0)
    assert proto.state is protocol.ServerState.OPEN, proto.data_to_send()
    return proto


def sent(proto: protocol.ServerProtocol) -> list[wire.Message]:
    return [wire.decode(d, direction="to_client") for d in proto.data_to_send()]


def assert_failed(proto: protocol.ServerProtocol, code: str, close_code: int) -> None:
    out = sent(proto)
    assert len(out) == 1 and isinstance(out[0], wire.Error), out
    assert out[0].code == code
    assert proto.close_code == close_code and proto.state is protocol.ServerState.CLOSED
    assert "Traceback" not in out[0].message


def test_hello_then_audio_events() -> None:
    proto = open_protocol()
    pcm = np.array([0, 16384, -32768], "<i2").tobytes()
    proto.receive(wire.encode(wire.Audio(data=pcm)), now=0.1)
    proto.receive(wire.encode(wire.Identity(identity="b")), now=0.2)
    proto.receive(wire.encode(wire.Interrupt()), now=0.3)
    proto.receive(wire.encode(wire.End()), now=0.4)
    events = proto.events_received()
    assert isinstance(events[0], wire.Hello)
    assert isinstance(events[1], protocol.AudioReceived) and events[1].sample_rate_hz == 16000
    np.testing.assert_array_equal(events[1].samples, np.array([0.0, 0.5, -1.0], np.float32))
    assert events[2:] == [wire.Identity(identity="b"), wire.Interrupt(), wire.End()]
    assert proto.state is protocol.ServerState.ENDING and proto.data_to_send() == []
    assert proto.events_received() == []


def test_hello_must_come_first() -> None:
    proto = protocol.ServerProtocol()
    proto.receive(wire.encode(wire.Audio(data=b"")), now=0.0)
    assert_failed(proto, "hello_expected", 1003)
    proto.receive(hello_bytes(), now=0.1)  # ignored after the close
    assert proto.events_received() == [] and proto.data_to_send() == []


def test_hello_exactly_once() -> None:
    proto = open_protocol()
    proto.receive(hello_bytes(), now=0.1)
    assert_failed(proto, "duplicate_hello", 1003)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_bad_token_closes_1008(token: str | None) -> None:
    proto = protocol.ServerProtocol(protocol.ServerProtocolConfig(token="tok"))
    proto.receive(hello_bytes(token=token), now=0.0)
    assert_failed(proto, "bad_token", 1008)
    assert proto.events_received() == []


def test_good_token_and_no_token_configured() -> None:
    open_protocol(token="tok")
    proto = protocol.ServerProtocol()
    proto.receive(hello_bytes(token="anything"), now=0.0)
    assert proto.state is protocol.ServerState.OPEN


def test_text_frame_closes_1003() -> None:
    proto = protocol.ServerProtocol()
    proto.receive('{"type": "hello"}', now=0.0)
    assert_failed(proto, "text_frame", 1003)


def test_message_too_big_closes_1009() -> None:
    proto = open_protocol(max_message_bytes=100)
    proto.receive(wire.encode(wire.Audio(data=b"\0" * 100)), now=0.1)
    assert_failed(proto, "too_big", 1009)


def test_more_than_one_second_of_audio_closes_1009() -> None:
    proto = open_protocol()
    proto.receive(wire.encode(wire.Audio(data=b"\0" * 32000)), now=0.1)  # exactly 1 s: fine
    assert len(proto.events_received()) == 2
    proto.receive(wire.encode(wire.Audio(data=b"\0" * 32002)), now=0.2)
    assert_failed(proto, "audio_too_long", 1009)


def test_bad_audio_closes_1003() -> None:
    proto = open_protocol()
    proto.receive(wire.encode(wire.Audio(data=b"\0" * 3)), now=0.1)
    assert_failed(proto, "bad_audio", 1003)


def test_audio_after_end_rejected() -> None:
    proto = open_protocol()
    proto.receive(wire.encode(wire.End()), now=0.1)
    proto.receive(wire.encode(wire.Interrupt()), now=0.2)  # control is still fine
    assert proto.state is protocol.ServerState.ENDING
    proto.receive(wire.encode(wire.Audio(data=b"\0\0")), now=0.3)
    assert_failed(proto, "unexpected_message", 1003)


def test_offer_only_for_webrtc_and_audio_only_for_ws() -> None:
    proto = open_protocol()
    proto.receive(wire.encode(wire.Offer(sdp="v=0")), now=0.1)
    assert_failed(proto, "unexpected_message", 1003)
    proto = protocol.ServerProtocol()
    proto.receive(hello_bytes(audio="webrtc"), now=0.0)
    proto.receive(wire.encode(wire.Offer(sdp="v=0")), now=0.1)
    assert proto.events_received()[1] == wire.Offer(sdp="v=0")
    proto.receive(wire.encode(wire.Audio(data=b"\0\0")), now=0.2)
    assert_failed(proto, "unexpected_message", 1003)


def test_webrtc_refused_when_not_allowed() -> None:
    proto = protocol.ServerProtocol(protocol.ServerProtocolConfig(allow_webrtc=False))
    proto.receive(hello_bytes(audio="webrtc"), now=0.0)
    assert_failed(proto, "unsupported", 1003)


def test_unknown_identity() -> None:
    config = protocol.ServerProtocolConfig(identities=("a", "b"))
    proto = protocol.ServerProtocol(config)
    proto.receive(hello_bytes(identity="auto"), now=0.0)
    proto.receive(wire.encode(wire.Identity(identity="a")), now=0.1)
    assert len(proto.events_received()) == 2
    proto.receive(wire.encode(wire.Identity(identity="zed")), now=0.2)
    assert_failed(proto, "unknown_identity", 1003)
    proto = protocol.ServerProtocol(config)
    proto.receive(hello_bytes(identity="zed"), now=0.0)
    assert_failed(proto, "unknown_identity", 1003)


def test_server_full_and_finish() -> None:
    proto = protocol.ServerProtocol()
    proto.fail(ProtocolError("server_full", "no free slot", CloseCode.TRY_AGAIN_LATER))
    assert_failed(proto, "server_full", 1013)
    proto = open_protocol()
    assert proto.send(wire.Answer(sdp="v=0"))
    proto.finish(frames=42)
    assert sent(proto) == [wire.Answer(sdp="v=0"), wire.ServerEnd(frames=42)]
    assert proto.close_code == 1000
    assert not proto.send(wire.Answer(sdp="v=0"))
    assert proto.data_to_send() == []


def test_internal_error_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: bytes, *, direction: str) -> wire.Message:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(protocol, "decode", boom)
    proto = protocol.ServerProtocol()
    proto.receive(hello_bytes(), now=0.0)
    out = proto.data_to_send()
    error = msgpack.unpackb(out[0], raw=False)
    assert error == {"type": "error", "code": "internal", "message": "internal server error"}
    assert proto.close_code == 1011


# ------------------------------------------------------------------ hostile input


def test_hello_deadline_closes_1008_when_no_hello_came_in_time() -> None:
    proto = protocol.ServerProtocol(protocol.ServerProtocolConfig(hello_timeout_s=5.0), now=10.0)
    assert proto.hello_deadline == 15.0
    proto.check_deadline(14.9)
    assert proto.state is protocol.ServerState.AWAITING_HELLO and proto.data_to_send() == []
    proto.check_deadline(15.0)
    assert_failed(proto, "hello_timeout", 1008)
    proto = protocol.ServerProtocol(protocol.ServerProtocolConfig(hello_timeout_s=5.0), now=10.0)
    proto.receive(hello_bytes(), now=11.0)
    assert proto.hello_deadline is None
    proto.check_deadline(100.0)  # a session has no hello deadline
    assert proto.state is protocol.ServerState.OPEN


def echo_errors() -> list[tuple[bytes, str]]:
    huge = "x" * 200_000
    return [
        (hello_bytes(encoding=huge), "bad_value"),
        (hello_bytes(identity=huge), "unknown_identity"),
        (msgpack.packb({"type": huge}), "unknown_type"),
        (hello_bytes(sample_rate=huge), "bad_field_type"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_error_messages_echo_at_most_64_characters_of_client_input(case: int) -> None:
    data, code = echo_errors()[case]
    proto = protocol.ServerProtocol(protocol.ServerProtocolConfig(identities=("a", "b")))
    proto.receive(data, now=0.0)
    out = sent(proto)
    assert isinstance(out[0], wire.Error) and out[0].code == code
    assert len(out[0].message) < 300, out[0].message
    assert proto.failure is not None and len(str(proto.failure)) < 320


def test_echo_names_the_value_cut_with_its_length() -> None:
    from realtime.errors import echo

    assert echo("short") == "'short'"
    assert echo("y" * 1000) == "'" + "y" * 64 + "'… (1000 characters)"
    assert echo(b"\0" * 100).endswith("… (100 bytes)")
    assert len(echo(list(range(10_000)))) < 100


def test_error_message_sent_to_a_client_is_bounded() -> None:
    msg = wire.Error(code="bad_value", message="m" * 10_000)
    assert len(msg.message) <= wire.MAX_ERROR_MESSAGE_CHARS
    assert wire.decode(wire.encode(msg), direction="to_client") == msg


def test_f32_samples_far_out_of_range_are_bad_audio_naming_the_sample() -> None:
    proto = protocol.ServerProtocol()
    proto.receive(hello_bytes(encoding="pcm_f32le"), now=0.0)
    proto.receive(wire.encode(wire.Audio(data=np.array([0.0, 0.5, 1e20], "<f4").tobytes())),
                  now=0.1)
    out = sent(proto)
    assert isinstance(out[-1], wire.Error) and out[-1].code == "bad_audio"
    assert "sample 2" in out[-1].message and proto.close_code == 1003


def test_f32_overshoot_is_clipped_to_full_scale() -> None:
    proto = protocol.ServerProtocol()
    proto.receive(hello_bytes(encoding="pcm_f32le"), now=0.0)
    pcm = np.array([1.5, -2.0, 0.25, -1.0], "<f4").tobytes()
    proto.receive(wire.encode(wire.Audio(data=pcm)), now=0.1)
    audio = proto.events_received()[-1]
    assert isinstance(audio, protocol.AudioReceived)
    np.testing.assert_array_equal(audio.samples, np.array([1.0, -1.0, 0.25, -1.0], np.float32))
