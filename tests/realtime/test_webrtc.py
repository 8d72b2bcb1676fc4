"""WebRTC ingest: PyAV frame decoding, and a whole session between two in-process aiortc peers
(audio over RTP/Opus, signalling and frames over /ws)."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

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
