"""Shared pieces of the server tests: real espeak-ng speech, the tiny random model, and a
factory of real servers on ephemeral localhost ports."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from realtime.audio import resample

torch.set_num_threads(1)  # the machine is shared: one core per test process is plenty

PAUSE_S = 0.5


@dataclass(frozen=True)
class Speech:
    """'Hello there.' + 0.5 s of silence + 'How are you today?' from espeak-ng."""

    wav: Path  # espeak-ng's own rate (22050 Hz), int16
    rate: int
    audio: np.ndarray  # float32 at `rate`
    wav16: Path  # the same speech at 16 kHz (the server's rate: no resampling on the way)
    audio16: np.ndarray  # float32 at 16 kHz, exactly what wav16 decodes to
    raw16: Path  # 16 kHz s16le mono headerless (the ALSA file-plugin microphone)

    @property
    def duration_s(self) -> float:
        return self.audio16.size / 16000


def _espeak(text: str, path: Path) -> tuple[int, np.ndarray]:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    rate, data = wavfile.read(path)
    return int(rate), data.astype(np.float32) / 32768.0


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("speech")
    rate, first = _espeak("Hello there.", folder / "a.wav")
    rate2, second = _espeak("How are you today?", folder / "b.wav")
    assert rate == rate2
    audio = np.concatenate([first, np.zeros(int(PAUSE_S * rate), np.float32), second])
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2")
    wav = folder / "speech.wav"
    wavfile.write(wav, rate, pcm)
    pcm16 = np.clip(np.round(resample(audio, rate, 16000) * 32768.0), -32768, 32767).astype("<i2")
    wav16 = folder / "speech16.wav"
    wavfile.write(wav16, 16000, pcm16)
    raw16 = folder / "speech16.raw"
    raw16.write_bytes(pcm16.tobytes())
    return Speech(wav=wav, rate=rate, audio=pcm.astype(np.float32) / 32768.0, wav16=wav16,
                  audio16=pcm16.astype(np.float32) / 32768.0, raw16=raw16)


@pytest.fixture(scope="session")
def tiny_model() -> Any:
    from models.net.random_model import TINY, random_talker

    return random_talker(TINY)


ServerFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_server(tiny_model: Any) -> AsyncIterator[ServerFactory]:
    """``await make_server(token=..., max_sessions=..., session=SessionConfig(...))``: a started
    TalkerServer on 127.0.0.1 with an ephemeral port; all are stopped after the test."""
    from realtime.engine import EngineConfig
    from realtime.server import ServerConfig, TalkerServer

    servers: list[TalkerServer] = []

    async def factory(session: Any = None, **config: Any) -> TalkerServer:
        server = TalkerServer(tiny_model, ServerConfig(port=0, **config), session_config=session,
                              engine_config=EngineConfig(torch_threads=1))
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


def ws_url(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def read_to_close(ws: Any, timeout_s: float = 10.0) -> tuple[list[Any], int | None]:
    """Every server message until the server closes: (decoded messages, close code)."""
    from websockets.exceptions import ConnectionClosed

    from realtime import messages as wire

    received: list[Any] = []
    try:
        while True:
            data = await asyncio.wait_for(ws.recv(), timeout_s)
            assert isinstance(data, bytes)
            received.append(wire.decode(data, direction="to_client"))
    except ConnectionClosed:
        pass
    return received, ws.close_code
