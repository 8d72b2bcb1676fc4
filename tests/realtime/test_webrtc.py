"""WebRTC ingest: PyAV frame decoding, and a whole session between two in-process aiortc peers
(audio over RTP/Opus, signalling and frames over /ws)."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from models.errors import ConfigError
from realtime import messages as wire
from realtime.audio import resample
from realtime.client import StreamOptions, open_session
from realtime.webrtc import PacedAudioTrack, frame_to_mono
from tests.realtime.conftest import ws_url

RTC_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, what browsers send


def stereo_frame(left: np.ndarray, right: np.ndarray, fmt: str) -> av.AudioFrame:
    if fmt == "s16":  # packed: (1, samples * channels), interleaved
        pcm = np.stack([left, right], axis=1).reshape(1, -1)
        data = np.round(pcm * 32768).clip(-32768, 32767).astype(np.int16)
    else:  # "fltp": planar, (channels, samples)
        data = np.stack([left, right]).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
    frame.sample_rate = RTC_RATE
    return frame


@pytest.mark.parametrize("fmt", ["s16", "fltp"])
def test_frame_to_mono_downmixes_packed_and_planar(fmt):
    left = np.linspace(-0.5, 0.5, FRAME_SAMPLES, dtype=np.float32)
    right = np.full(FRAME_SAMPLES, 0.25, np.float32)
    mono, rate = frame_to_mono(stereo_frame(left, right, fmt))
    assert rate == RTC_RATE and mono.dtype == np.float32 and mono.shape == (FRAME_SAMPLES,)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-4)


async def test_webrtc_session_streams_frames_and_ends_with_the_track(make_server, speech):
    # idle_timeout_s below the audio's length: WebRTC audio counts as activity, though no
    # /ws message comes between the offer and the end
    server = await make_server(idle_timeout_s=1.0)
    ws, ready = await open_session(ws_url(server), StreamOptions(), RTC_RATE, audio="webrtc")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: offline
    track = PacedAudioTrack(resample(speech.audio, speech.rate, RTC_RATE), channels=2)
    sender = pc.addTrack(track)
    frames: list[wire.Frame] = []
    end: wire.ServerEnd | None = None
    try:
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers ICE in here
        await ws.send(wire.encode(wire.Offer(sdp=pc.localDescription.sdp)))
        answer = wire.decode(await asyncio.wait_for(ws.recv(), 10), direction="to_client")
        assert isinstance(answer, wire.Answer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

        async def stop_when_played() -> None:
            await track.done.wait()
            await asyncio.sleep(0.3)  # let the last packets land
            await sender.stop()  # RTCP BYE: the server's track ends, like an `end` message

        stopper = asyncio.create_task(stop_when_played())
        async for data in ws:
            assert isinstance(data, bytes)
            msg = wire.decode(data, direction="to_client")
            assert not isinstance(msg, wire.Error), msg
            if isinstance(msg, wire.Frame):
                frames.append(msg)
            elif isinstance(msg, wire.ServerEnd):
                end = msg
        await stopper
    finally:
        await pc.close()
        await ws.close()
    assert ws.close_code == 1000
    assert end is not None and end.frames == len(frames)
    assert [f.seq for f in frames] == list(range(len(frames)))
    expected = speech.audio.size / speech.rate * 30
    # Opus adds a few ms of priming; the first packets may arrive before the track is wired up
    assert expected - 6 <= len(frames) <= expected + 6
    assert len(frames[0].vertices) == ready.mesh.vertex_count * 3 * 2  # f16


async def test_audio_receivers_get_a_one_frame_jitter_prefetch() -> None:
    from aiortc import RTCPeerConnection
    from aiortc.jitterbuffer import JitterBuffer

    from realtime.webrtc import AUDIO_JITTER_PREFETCH, _shorten_jitter_buffer

    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        before = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert isinstance(before, JitterBuffer) and before._prefetch == 4  # aiortc's 80 ms
        _shorten_jitter_buffer(receiver)
        after = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert after._prefetch == AUDIO_JITTER_PREFETCH == 1
        assert after.capacity == before.capacity
    finally:
        await pc.close()


# --------------------------------------------------------------------------- where media goes
def candidates(sdp: str) -> list[tuple[str, str]]:
    """(address, type) of every ``a=candidate`` line of an SDP."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            out.append((fields[4], fields[7]))
    return out


async def client_offer(extra_candidates: tuple[str, ...] = ()) -> tuple[RTCPeerConnection, str]:
    """An aiortc client's offer (its host candidates are this machine's own addresses), with
    ``extra_candidates`` (SDP candidate values) added to its audio section."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PacedAudioTrack(np.zeros(RTC_RATE, np.float32)))
    await pc.setLocalDescription(await pc.createOffer())
    lines = pc.localDescription.sdp.splitlines()
    at = max(i for i, line in enumerate(lines) if line.startswith("a=candidate:")) + 1
    lines[at:at] = [f"a=candidate:{c}" for c in extra_candidates]
    return pc, "\r\n".join(lines) + "\r\n"


async def offer_to_server(server, sdp: str) -> tuple[object, str]:
    ws, _ = await open_session(ws_url(server), StreamOptions(), RTC_RATE, audio="webrtc")
    await ws.send(wire.encode(wire.Offer(sdp=sdp)))
    answer = wire.decode(await asyncio.wait_for(ws.recv(), 10), direction="to_client")
    assert isinstance(answer, wire.Answer), answer
    return ws, answer.sdp


async def test_the_answer_offers_only_the_configured_address(make_server):
    """--host 127.0.0.1: the media socket binds there and the answer names nothing else (no
    interface address of the machine leaks into the SDP)."""
    server = await make_server()  # host 127.0.0.1
    pc, sdp = await client_offer()
    try:
        ws, answer = await offer_to_server(server, sdp)
        await ws.close()
    finally:
        await pc.close()
    found = candidates(answer)
    assert found and all(address == "127.0.0.1" for address, _ in found), found
    assert "c=IN IP4 127.0.0.1" in answer


async def test_remote_candidates_off_the_machine_get_no_checks(make_server, monkeypatch):
    """An offer may name any address; bound to loopback, the server checks (sends STUN to) only
    addresses of this machine, and resolves no mDNS name (a multicast query on the LAN).

    aioice's network edges are replaced by recorders, so that nothing leaves loopback whatever
    the server would do: the test asserts on what the server *would* send."""
    import aioice.ice

    checked: list[str] = []
    resolved: list[str] = []

    async def record_check(self, pair) -> None:  # instead of sending a STUN binding request
        self.check_state(pair, aioice.ice.CandidatePair.State.IN_PROGRESS)
        checked.append(pair.remote_candidate.host)

    class RecordingMdns:
        async def resolve(self, name: str) -> None:
            resolved.append(name)

    async def no_mdns(subscriber) -> RecordingMdns:
        return RecordingMdns()

    monkeypatch.setattr(aioice.ice.Connection, "check_start", record_check)
    monkeypatch.setattr(aioice.ice, "get_or_create_mdns_protocol", no_mdns)
    server = await make_server()
    pc, sdp = await client_offer((
        "1 1 udp 2130706431 198.51.100.7 50000 typ host",  # TEST-NET-2: not this machine
        "2 1 udp 2130706431 2001:db8::7 50000 typ host",
        "3 1 udp 2130706431 1f3c2a9e-4c6e-4d5e-9c1a-2b3c4d5e6f70.local 50000 typ host",
        "4 1 udp 1694498815 203.0.113.9 50001 typ srflx raddr 0.0.0.0 rport 0",
    ))
    own = [address for address, _ in candidates(sdp)][:-4]  # the client's (this machine's)
    try:
        ws, _ = await offer_to_server(server, sdp)
        for _ in range(100):  # checks start once the answer is out
            if checked:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await ws.close()
    finally:
        await pc.close()
    assert checked and set(checked) <= set(own), (checked, own)
    assert resolved == []


def test_ice_policy_of_each_bind_address():
    from realtime.webrtc import IcePolicy

    own = {"192.0.2.2", "fd00::2"}
    loopback = IcePolicy.for_host("127.0.0.1")
    assert loopback == IcePolicy(("127.0.0.1",), None, local_only=True)
    assert IcePolicy.for_host("localhost") == loopback
    assert [loopback.allows_remote(h, own) for h in
            ("127.0.0.1", "192.0.2.2", "fd00::2", "::1", "198.51.100.7", "x.local")] == [
        True, True, True, True, False, False]
    lan = IcePolicy.for_host("192.0.2.2", public_ip="203.0.113.5")
    assert lan == IcePolicy(("192.0.2.2",), "203.0.113.5", local_only=False)
    assert lan.allows_remote("198.51.100.7", own) and lan.allows_remote("x.local", own)
    assert IcePolicy.for_host("0.0.0.0") == IcePolicy(None)  # every interface: aiortc's choice
    with pytest.raises(ConfigError, match="public IP"):
        IcePolicy.for_host("0.0.0.0", public_ip="vm.example")


def test_filter_offer_and_advertise_touch_only_candidates():
    from realtime.webrtc import IcePolicy, advertise, filter_offer

    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n"
           "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
           "a=candidate:2 1 udp 2130706431 198.51.100.7 5000 typ host\r\n"
           "a=candidate:3 1 udp 2130706431 abc.local 5000 typ host\r\na=end-of-candidates\r\n")
    kept, dropped = filter_offer(sdp, IcePolicy.for_host("127.0.0.1"), own=set())
    assert dropped == ["198.51.100.7", "abc.local"]
    assert candidates(kept) == [("127.0.0.1", "host")] and "a=end-of-candidates" in kept
    assert filter_offer(sdp, IcePolicy.for_host("0.0.0.0"), own=set()) == (sdp, [])
    public = advertise(kept, IcePolicy(("127.0.0.1",), "203.0.113.5"))
    assert candidates(public) == [("203.0.113.5", "host")]
    assert "c=IN IP4 203.0.113.5" in public and "5000 typ host" in public
    assert advertise(kept, IcePolicy(("127.0.0.1",))) == kept
