"""``talker stream`` and ``talker mic`` as subprocesses against an in-process server."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.realtime.conftest import Speech, ws_url

REPO = Path(__file__).resolve().parents[2]


async def talker(*args: str, env: dict[str, str] | None = None, timeout_s: float = 30.0,
                 ) -> tuple[int, str, str]:
    """Run ``python -m talker ARGS`` (the same as the ``talker`` script) without blocking the
    event loop that serves it: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "talker", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def errors_only(stderr: str) -> list[str]:
    """stderr without the INFO/DEBUG log lines."""
    return [line for line in stderr.splitlines()
            if line.strip() and " INFO " not in line and " DEBUG " not in line]


async def test_stream_saves_frames_and_prints_latency(make_server, speech: Speech, tmp_path):
    server = await make_server()
    out = tmp_path / "frames.npz"
    code, stdout, stderr = await talker("stream", str(speech.wav), "--url", ws_url(server),
                                        "--out", str(out), "--fast", "--format", "f32")
    assert code == 0, stderr
    n = math.ceil(speech.audio.size * 30 / speech.rate)
    assert f"frames {n} (server end: {n}), gaps 0" in stdout
    assert "latency server p50/p95/p99" in stdout and "client p50/p95/p99" in stdout
    saved = np.load(out)
    assert saved["vertices"].shape == (n, saved["template"].shape[0], 3)
    assert list(saved["seq"]) == list(range(n))
    assert saved["faces"].max() < saved["template"].shape[0]


async def test_stream_coeffs_saves_coefficients_and_reports_bytes_per_s(
        make_server, speech: Speech, tmp_path):
    """`talker stream --format coeffs`: frames are the model's coefficients (K f16 each, named
    in ready.basis), about 1/100 of the bytes of vertex frames."""
    server = await make_server()
    out, summary = tmp_path / "coeffs.npz", tmp_path / "summary.json"
    code, stdout, stderr = await talker("stream", str(speech.wav), "--url", ws_url(server),
                                        "--out", str(out), "--json", str(summary),
                                        "--format", "coeffs")
    assert code == 0, stderr
    n = math.ceil(speech.audio.size * 30 / speech.rate)
    assert f"frames {n} (server end: {n}), gaps 0" in stdout
    saved = np.load(out)
    names = list(saved["names"])
    assert saved["coeffs"].shape == (n, len(names)) and "vertices" not in saved
    assert names == list(server.model.contract.basis.names)
    assert np.all(np.isfinite(saved["coeffs"])) and np.abs(saved["coeffs"]).max() > 0
    if "vectors" in saved:  # any basis but the facecap head's own blendshapes
        assert saved["vectors"].shape == (len(names), *saved["template"].shape)
    else:
        assert set(names) <= set(saved["blendshapes"])  # ARKit names the viewer's glTF has
    result = json.loads(summary.read_text())
    # ~165 bytes a frame at 30 fps plus ~1 stats message a second, paced in real time
    # (vertex frames: 2694*3*2 bytes, ~475 KiB/s)
    assert 2 * 1024 < result["bytes_per_s"] < 10 * 1024, result
    assert result["ready_bytes"] > 12 * saved["template"].shape[0]  # the mesh came once


async def test_stream_over_webrtc_gets_every_frame(make_server, speech: Speech, tmp_path):
    """`talker stream --webrtc`: the file as a WebRTC track (Opus over RTP between two real
    aiortc peers), frames back over /ws with their client-side latency."""
    server = await make_server()
    summary = tmp_path / "summary.json"
    code, stdout, stderr = await talker("stream", str(speech.wav), "--url", ws_url(server),
                                        "--webrtc", "--json", str(summary))
    assert code == 0, stderr
    result = json.loads(summary.read_text())
    expected = speech.audio.size / speech.rate * 30
    # Opus adds a few ms of priming; the first packets may arrive before the track is wired up
    assert expected - 6 <= result["frames"] <= expected + 6
    assert result["end_frames"] == result["frames"] and result["gaps"] == 0
    assert 0 < result["client_latency_ms"]["p50"] < 2000
    code, _, stderr = await talker("stream", str(speech.wav), "--webrtc", "--fast")
    assert code == 2 and "--fast cannot be used with --webrtc" in stderr


async def test_stream_reports_a_server_error_in_one_line(make_server, speech: Speech):
    server = await make_server(token="s3cret")
    code, stdout, stderr = await talker("stream", str(speech.wav), "--url", ws_url(server),
                                        "--token", "wrong")
    assert code != 0
    assert "Traceback" not in stderr
    lines = errors_only(stderr)
    assert len(lines) == 1 and "bad_token" in lines[0] and lines[0].startswith("talker: error:")


async def test_stream_reports_connection_refused(speech: Speech):
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, stderr = await talker("stream", str(speech.wav), "--url",
                                   f"ws://127.0.0.1:{port}/ws")
    assert code != 0 and "Traceback" not in stderr
    lines = errors_only(stderr)
    assert len(lines) == 1 and "connection refused" in lines[0]


async def test_stream_reports_a_missing_file(tmp_path):
    code, _, stderr = await talker("stream", str(tmp_path / "nope.wav"))
    assert code != 0 and "Traceback" not in stderr
    assert "no such audio file" in stderr


ASOUNDRC = """\
pcm.!default {{ type plug  slave {{ pcm "filemic" format S16_LE rate 16000 channels 1 }} }}
pcm.filemic {{ type file  slave.pcm null  file "/dev/null"  infile "{raw}"  format "raw" }}
"""


def _have_portaudio() -> bool:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _have_portaudio(), reason="PortAudio (libportaudio2) is not installed")
async def test_mic_streams_an_alsa_file_microphone(make_server, speech: Speech, tmp_path):
    """ALSA's file plugin plays speech16.raw as the default capture device (the null slave
    delivers it faster than real time, which the server serves without skipping)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC.format(raw=speech.raw16))
    server = await make_server()
    env = {**os.environ, "HOME": str(home)}
    code, stdout, stderr = await talker("mic", "--url", ws_url(server), "--seconds", "3",
                                        env=env)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    summary = stdout.strip().splitlines()[-2:]  # after the \r progress line(s)
    assert summary[0].startswith("frames ") and "latency server p50/p95/p99" in summary[1]
    frames = int(summary[0].split()[1])
    end_frames = int(summary[0].split("server end: ")[1].split(")")[0])
    assert frames == end_frames == 90  # --seconds 3 counts captured audio: 3 s x 30 fps
    assert "gaps 0" in summary[0]


async def test_serve_names_a_device_it_cannot_use():
    import torch

    code, _, err = await talker("serve", "--random-model", "--port", "0", "--device", "tpu")
    assert code == 2 and "--device tpu: use cpu or cuda[:N]" in err
    if not torch.cuda.is_available():
        code, _, err = await talker("serve", "--random-model", "--port", "0", "--device", "cuda")
        assert code == 2 and "sees no CUDA device" in err and "Traceback" not in err


def test_read_wav_resamples_rates_the_protocol_cannot_carry(tmp_path: Path) -> None:
    from models.audio import write_wav
    from realtime.client import ClientError, read_wav

    t = np.arange(96000) / 96000
    write_wav(tmp_path / "hi.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 96000)
    audio, rate = read_wav(tmp_path / "hi.wav")
    assert rate == 16000 and audio.size == 16000
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.01)
    write_wav(tmp_path / "ok.wav", np.zeros(441, np.float32), 44100)
    assert read_wav(tmp_path / "ok.wav")[1] == 44100  # a protocol rate goes as it is
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ClientError, match="holds no audio"):
        read_wav(tmp_path / "empty.wav")


def test_stream_result_saves_coeffs_with_their_basis_and_counts_bytes(tmp_path: Path) -> None:
    """Exact, without a server: coefficient frames saved with names and vectors; bytes_per_s
    counts the messages after `ready` over the time they took."""
    from realtime import messages as wire
    from realtime.client import StreamResult

    template = np.zeros((3, 3), "<f4")
    vectors = np.arange(2 * 3 * 3, dtype="<f2").reshape(2, 3, 3)
    ready = wire.Ready(session="s", fps=30, identities=(), identity="a",
                       mesh=wire.Mesh(vertex_count=3, template=template.tobytes(),
                                      faces=np.array([0, 1, 2], "<u4").tobytes()),
                       blendshapes=(), basis=wire.Basis(names=("pc0", "pc1"),
                                                       vectors=vectors.tobytes()))
    result = StreamResult(ready=ready, seq=[0, 1], t=[0.0, 1 / 30],
                          coeffs=[np.array([0.5, -1.0], np.float32), np.zeros(2, np.float32)],
                          message_bytes=[(10.0, 165), (10.5, 165), (11.0, 170), (12.0, 165)])
    assert result.bytes_per_s == (165 + 170 + 165) / 2.0
    assert result.summary()["bytes_per_s"] == 250
    result.save_npz(tmp_path / "c.npz")
    saved = np.load(tmp_path / "c.npz")
    assert list(saved["names"]) == ["pc0", "pc1"] and "vertices" not in saved
    np.testing.assert_array_equal(saved["coeffs"], [[0.5, -1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(saved["vectors"], vectors.astype(np.float32))
    assert StreamResult(message_bytes=[(1.0, 100)]).bytes_per_s is None
