"""WebRTC ingest: an aiortc peer that receives one audio track and feeds mono PCM to a callback.

Signalling (offer/answer) travels over the session's WebSocket (DESIGN §7), so this module only
turns an SDP offer into an answer and pumps decoded audio frames. Browsers send Opus at 48 kHz,
usually stereo, in 20 ms frames; each frame is downmixed to mono float32 here and handed on with
its sample rate. The session core resamples it to 16 kHz like any other input.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from models.audio import float_to_pcm16
from realtime.errors import ProtocolError
from realtime.metrics import SendClock

log = logging.getLogger(__name__)

RTC_RATE_HZ = 48000  # what browsers send
RTC_FRAME_SAMPLES = 960  # 20 ms at 48 kHz

AudioSink = Callable[[np.ndarray, int], None]  # (mono float32 samples, sample_rate_hz)


def frame_to_mono(frame: object) -> tuple[np.ndarray, int]:
    """Decode a PyAV ``AudioFrame`` to (mono float32 in [-1, 1], sample rate)."""
    array = frame.to_ndarray()  # type: ignore[attr-defined]
    fmt = frame.format.name  # type: ignore[attr-defined]
    channels = len(frame.layout.channels)  # type: ignore[attr-defined]
    if fmt.endswith("p"):  # planar: (channels, samples)
        samples = array.reshape(channels, -1).T
    else:  # packed: (1, samples * channels), interleaved
        samples = array.reshape(-1, channels)
    if np.issubdtype(samples.dtype, np.integer):
        scale = float(np.iinfo(samples.dtype).max) + 1.0
        mono = samples.astype(np.float32).mean(axis=1) / scale
    else:
        mono = samples.astype(np.float32).mean(axis=1)
    return mono.astype(np.float32), int(frame.sample_rate)  # type: ignore[attr-defined]


# aiortc holds each received audio frame until 4 more have arrived (JitterBuffer prefetch=4):
# 80 ms of 20-ms Opus frames added to the motion latency of every WebRTC session (measured:
# client-side p95 +81 ms over the WebSocket path). One frame of prefetch still reorders
# neighbouring packets and lets a frame out 20 ms after it arrived.
AUDIO_JITTER_PREFETCH = 1


def _shorten_jitter_buffer(receiver: object) -> None:
    """Give an aiortc audio receiver a jitter buffer with AUDIO_JITTER_PREFETCH frames of
    prefetch. aiortc has no setting for it: the buffer is a private attribute, replaced here
    before any packet arrives; if a future aiortc renames it, the default buffer stays."""
    name = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, name, None)
    if isinstance(current, JitterBuffer):
        setattr(receiver, name, JitterBuffer(capacity=current.capacity,
                                             prefetch=AUDIO_JITTER_PREFETCH))
    else:
        log.warning("aiortc's receiver has no jitter buffer attribute; audio keeps its default "
                    "prefetch (about 80 ms more latency)")


class WebRtcIngest:
    """One peer connection per session; receives the first audio track it is offered."""

    def __init__(self, sink: AudioSink, on_ended: Callable[[], None] | None = None) -> None:
        self._sink = sink
        self._on_ended = on_ended
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._tasks: set[asyncio.Task[None]] = set()
        self._got_track = False
        self.frames_received = 0
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_state)

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def accept_offer(self, sdp: str) -> str:
        """Apply the client's offer and return the answer SDP (ICE candidates included)."""
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError and friends on bad SDP
            raise ProtocolError(
                "bad_value", f"field 'sdp': could not apply the offer: {exc}"
            ) from exc
        if not any(t.kind == "audio" for t in self._pc.getTransceivers()):
            raise ProtocolError("bad_value", "field 'sdp': the offer has no audio track")
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind == "audio":
                _shorten_jitter_buffer(transceiver.receiver)
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        return str(self._pc.localDescription.sdp)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pc.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self._got_track:
            return
        self._got_track = True
        task = asyncio.get_running_loop().create_task(self._pump(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                mono, rate = frame_to_mono(frame)
                self.frames_received += 1
                self._sink(mono, rate)
        except MediaStreamError:
            log.debug("webrtc track ended")
        finally:
            if self._on_ended is not None:
                self._on_ended()

    async def _on_state(self) -> None:
        log.debug("webrtc connection state %s", self._pc.connectionState)


class PacedAudioTrack(MediaStreamTrack):
    """Client side: plays a mono float32 48 kHz signal as s16 20 ms frames (``channels`` copies,
    as a browser's stereo mic would), paced in real time, then ends and sets ``done``.
    ``clock`` records when each frame was handed over, so a frame's ``t`` maps to its send
    time."""

    kind = "audio"

    def __init__(self, audio_48k: np.ndarray, channels: int = 1) -> None:
        super().__init__()
        n = math.ceil(audio_48k.size / RTC_FRAME_SAMPLES) * RTC_FRAME_SAMPLES
        pcm = np.pad(np.asarray(audio_48k, np.float32), (0, n - audio_48k.size))
        self._pcm = float_to_pcm16(pcm)
        self._channels = channels
        self._index = 0
        self._start: float | None = None
        self.clock = SendClock()
        self.done = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        first = self._index * RTC_FRAME_SAMPLES
        if first >= self._pcm.size:
            self.done.set()
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + first / RTC_RATE_HZ - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = self._pcm[first : first + RTC_FRAME_SAMPLES]
        packed = np.repeat(chunk, self._channels).reshape(1, -1)  # interleaved
        layout = "mono" if self._channels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = RTC_RATE_HZ
        frame.pts = first
        frame.time_base = fractions.Fraction(1, RTC_RATE_HZ)
        self.clock.record(first / RTC_RATE_HZ, time.monotonic())
        self._index += 1
        return frame
