"""WebRTC ingest: an aiortc peer that receives one audio track and feeds mono PCM to a callback.

Signalling (offer/answer) travels over the session's WebSocket (DESIGN §7), so this module only
turns an SDP offer into an answer and pumps decoded audio frames. Browsers send Opus at 48 kHz,
usually stereo, in 20 ms frames; each frame is downmixed to mono float32 here and handed on with
its sample rate. The session core resamples it to 16 kHz like any other input.

Where the media goes is the :class:`IcePolicy`'s: the media socket binds only the address the
server was told to use (``--host``, or ``--webrtc-host``), the answer advertises only that (or
the ``--webrtc-public-ip`` of a 1:1 NAT), and a server bound to loopback sends no connectivity
check off this machine. aiortc gathers on every interface and checks whatever an offer names;
the policy narrows the first through aioice's host-address lookup (:func:`_gather_addresses`),
the second by filtering the offer before aiortc reads it (:func:`filter_offer`).
"""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass

import aioice.ice
import av
import numpy as np
from aioice import Candidate
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from models.audio import float_to_pcm16
from models.errors import ConfigError
from realtime.errors import ProtocolError
from realtime.metrics import SendClock
from realtime.static import is_loopback, own_addresses

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


# ------------------------------------------------------------------------------------- ICE
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class IcePolicy:
    """Where a session's WebRTC media may go.

    ``bind``: the addresses the media socket binds and the answer names (None: every interface
    but loopback, aiortc's own choice, for a server bound to all of them). ``public_ip``:
    advertised in the answer instead of the bound address (a 1:1 NAT: a cloud VM's public
    address, its UDP forwarded to the VM). ``local_only``: remote candidates must be addresses
    of this machine, and mDNS names (a multicast query on the LAN) are not resolved: a server
    bound to loopback serves browsers on this machine only.
    """

    bind: tuple[str, ...] | None = None
    public_ip: str | None = None
    local_only: bool = False

    @classmethod
    def for_host(cls, host: str, public_ip: str | None = None) -> IcePolicy:
        """The policy of media bound to ``host`` (an address, a name, or a wildcard)."""
        if public_ip is not None:
            try:
                ipaddress.ip_address(public_ip)
            except ValueError:
                raise ConfigError(f"WebRTC public IP {public_ip!r}: expected an IP address"
                                  ) from None
        if host in _WILDCARDS:
            return cls(None, public_ip)
        if host == "localhost":
            return cls(("127.0.0.1",), public_ip, local_only=True)
        try:
            addresses: tuple[str, ...] = (str(ipaddress.ip_address(host)),)
        except ValueError:  # a name: the addresses it has here
            try:
                infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise ConfigError(f"WebRTC host {host!r} does not resolve: {exc}") from exc
            addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        return cls(addresses, public_ip, local_only=all(is_loopback(a) for a in addresses))

    def allows_remote(self, host: str, own: Collection[str]) -> bool:
        """May the server send connectivity checks to ``host`` (an address or an mDNS name)?
        ``own``: this machine's addresses."""
        if not self.local_only:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # an mDNS name ("<uuid>.local")
            return False
        return address.is_loopback or str(address) in own


def filter_offer(sdp: str, policy: IcePolicy, own: Collection[str]) -> tuple[str, list[str]]:
    """The offer without the candidates ``policy`` does not allow: (SDP, dropped hosts)."""
    kept, dropped = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            host = Candidate.from_sdp(line[len("a=candidate:"):]).host
            if not policy.allows_remote(host, own):
                dropped.append(host)
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


def advertise(sdp: str, policy: IcePolicy) -> str:
    """The answer as sent: with a public IP, each candidate and the connection line name it
    instead of the bound address (the ports stay: the NAT forwards them)."""
    if policy.public_ip is None:
        return sdp
    family = "IP6" if ":" in policy.public_ip else "IP4"
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidate = Candidate.from_sdp(line[len("a=candidate:"):])
            candidate.host = policy.public_ip
            line = "a=candidate:" + candidate.to_sdp()
        elif line.startswith("c=IN "):
            line = f"c=IN {family} {policy.public_ip}"
        out.append(line)
    return "\r\n".join(out) + "\r\n"


# aiortc has no setting for the interfaces it gathers on: aioice asks its module function
# get_host_addresses(). That function is wrapped once, here, to answer with the addresses in
# _BIND while a WebRtcIngest gathers. _BIND is a context variable, set in that task and the tasks
# it starts, so other peers of the process (e.g. a test's client) keep aioice's own behaviour.
# If aioice stops asking this function, the answer shows it: test_webrtc checks its candidates.
_BIND: ContextVar[tuple[str, ...] | None] = ContextVar("talker_webrtc_bind", default=None)
_aioice_host_addresses = aioice.ice.get_host_addresses


def _gather_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    bind = _BIND.get()
    if bind is None:
        return _aioice_host_addresses(use_ipv4, use_ipv6)
    return [a for a in bind if (use_ipv6 if ":" in a else use_ipv4)]


aioice.ice.get_host_addresses = _gather_addresses


# ---------------------------------------------------------------------------------- ingest
class WebRtcIngest:
    """One peer connection per session; receives the first audio track it is offered."""

    def __init__(self, sink: AudioSink, on_ended: Callable[[], None] | None = None,
                 ice: IcePolicy = IcePolicy()) -> None:
        self._sink = sink
        self._on_ended = on_ended
        self._ice = ice
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
        """Apply the client's offer, less the candidates the ICE policy does not allow, and
        return the answer SDP (its candidates: the policy's addresses)."""
        try:
            sdp, dropped = filter_offer(sdp, self._ice, own_addresses())
            if dropped:
                log.info("webrtc: not checking remote candidates off this machine: %s",
                         ", ".join(dropped))
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
        bind = _BIND.set(self._ice.bind)
        try:
            await self._pc.setLocalDescription(answer)  # gathers the local candidates
        finally:
            _BIND.reset(bind)
        return advertise(str(self._pc.localDescription.sdp), self._ice)

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
