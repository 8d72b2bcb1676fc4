"""``talker mic``: the live microphone through sounddevice, streamed as protocol v1 audio."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from realtime.client import ClientError, StreamOptions, StreamResult, stream_audio

log = logging.getLogger("talker.mic")

MIC_RATE_HZ = 16000  # asked of the device; PortAudio/ALSA convert if the hardware differs
BLOCK_S = 0.02
STALL_GRACE_S = 2.0  # a device that delivers nothing stops this long after --seconds


async def mic_chunks(seconds: float, device: str | int | None,
                     stop: asyncio.Event) -> AsyncIterator[np.ndarray]:
    """Yield 20 ms float32 blocks from the input device until ``stop``, or once ``seconds``
    of audio were captured (0: no limit).

    The limit counts captured samples, not wall time: the same for a live microphone, and it
    keeps a virtual device that delivers faster than real time (ALSA's file plugin) to the
    length asked for. A device that stalls still stops ``STALL_GRACE_S`` after the limit."""
    try:
        import sounddevice as sd
    except OSError as exc:  # PortAudio missing
        raise ClientError(f"no audio input: {exc} (install libportaudio2)") from exc
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=500)

    def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        block = np.asarray(indata[:, 0], dtype=np.float32).copy()
        loop.call_soon_threadsafe(_offer, queue, block)

    if isinstance(device, str) and device.isdigit():
        device = int(device)
    try:
        stream = sd.InputStream(samplerate=MIC_RATE_HZ, channels=1, dtype="float32",
                                blocksize=int(MIC_RATE_HZ * BLOCK_S), device=device,
                                callback=callback)
    except Exception as exc:  # sounddevice raises PortAudioError and ValueError
        raise ClientError(f"cannot open the microphone ({device or 'default'}): {exc}") from exc
    started = time.monotonic()
    limit = int(round(seconds * MIC_RATE_HZ))
    captured = 0
    with stream:
        while not stop.is_set():
            if seconds and time.monotonic() - started >= seconds + STALL_GRACE_S:
                log.warning("the input device delivered %.2f s of audio in %.2f s; stopping",
                            captured / MIC_RATE_HZ, time.monotonic() - started)
                break
            try:
                block = await asyncio.wait_for(queue.get(), 1.0)
            except TimeoutError:
                continue
            if limit:
                block = block[: limit - captured]
            captured += block.size
            if block.size:
                yield block
            if limit and captured >= limit:
                break


def _offer(queue: asyncio.Queue[np.ndarray], block: np.ndarray) -> None:
    if queue.full():  # the sender stalled: keep the freshest audio
        queue.get_nowait()
    queue.put_nowait(block)


async def run_mic(url: str, identity: str | None = None, token: str | None = None,
                  seconds: float = 0.0, device: str | int | None = None,
                  ssl_context: ssl.SSLContext | None = None) -> dict[str, Any]:
    stop = asyncio.Event()
    last_print = [time.monotonic()]

    def on_frame(result: StreamResult) -> None:
        now = time.monotonic()
        if now - last_print[0] < 1.0:
            return
        last_print[0] = now
        recent = result.server_latency_ms[-30:]
        print(f"\rframes {result.frames}  latency {np.median(recent):.0f} ms  "
              f"gaps {result.gaps}", end="", flush=True)

    options = StreamOptions(identity=identity, token=token, ssl_context=ssl_context)
    try:
        result = await stream_audio(url, mic_chunks(seconds, device, stop), MIC_RATE_HZ,
                                    options, on_frame)
    finally:
        stop.set()
    print()
    return result.summary()
