"""The viewer in headless Chromium against tests/web/fake_server.py (protocol v1, no model).

Skipped when Chromium, playwright or the facecap asset is missing. The JS unit tests run with
`node --test tests/web/` (see test_node_suite below).
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GLB = ROOT / "assets" / "facecap.glb"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def test_node_suite():
    """protocol.test.mjs and playout.test.mjs under node's built-in runner."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    out = subprocess.run([node, "--test", str(ROOT / "tests" / "web")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def _bursts_wav(path: Path, seconds: float = 4.0, rate: int = 48000) -> None:
    """0.4 s tone bursts every 0.8 s (first one at 0.8 s): speech-like on/off for the mouth."""
    t = np.arange(int(rate * seconds)) / rate
    env = (((t % 0.8) < 0.4) & (t >= 0.4)).astype(np.float64)
    x = 0.4 * env * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 5 * t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_env():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/setup_system.sh --test)")
    if not GLB.exists():
        pytest.skip(f"{GLB} is missing (make setup)")
    tmp = Path(tempfile.mkdtemp())
    wav = tmp / "bursts.wav"
    _bursts_wav(wav)
    servers = []

    def start_server(*extra: str) -> str:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "web" / "fake_server.py"), "--port", str(port),
                                 "--glb", str(GLB), "--media", str(tmp), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        servers.append(proc)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("fake server did not start")

    with playwright.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM, headless=True,
                                                   args=[*ARGS, f"--use-file-for-fake-audio-capture={wav}"],
                                                   viewport={"width": 480, "height": 320})
        yield ctx, start_server
        ctx.close()
    for proc in servers:
        proc.terminate()
        proc.wait(timeout=5)


def _hook(page):
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__talker))")


def test_mic_over_ws_moves_the_mouth(browser_env):
    ctx, start_server = browser_env
    base = start_server()
    page = ctx.new_page()
    page.goto(f"{base}/?autostart=ws&identity=T01")
    page.wait_for_function("window.__talker.framesReceived >= 90", timeout=30000)
    h = _hook(page)
    page.close()
    assert h["state"] == "streaming" and h["source"] == "ws"
    assert h["faceSource"] == "template+gltf", "the glTF should fit the server's template"
    assert h["identity"] == "T01"
    assert h["drops"] == 0 and h["errors"] == []
    mouth = np.array([e["mouth"] for e in h["lipSpread"]])
    assert mouth.min() < 0.002 < 0.02 < mouth.max(), "the mouth should close in silence and open on the bursts"
    assert h["latency"]["p50"] is not None and h["serverStats"]["type"] == "stats"


def test_file_playback_is_in_sync(browser_env):
    ctx, start_server = browser_env
    base = start_server()
    page = ctx.new_page()
    page.goto(f"{base}/?autostart=file&src=/media/bursts.wav")
    page.wait_for_function("window.__talker.ended !== null && window.__talker.state === 'online'", timeout=30000)
    h = _hook(page)
    page.close()
    assert h["ended"]["frames"] == h["framesReceived"] == 120
    offsets = [e["offsetMs"] for e in h["avSync"]]
    # The first second may run at full resolution before the display adapts (software GL).
    steady = [e["offsetMs"] for e in h["avSync"] if e["t"] > 1.5]
    assert len(offsets) > 20
    assert abs(statistics.median(steady)) <= 45, steady


def test_bad_token_is_reported_without_retry(browser_env):
    ctx, start_server = browser_env
    base = start_server("--token", "sesame")
    page = ctx.new_page()
    page.goto(f"{base}/?autostart=ws&token=wrong")
    page.wait_for_function("window.__talker.state === 'error'", timeout=30000)
    h = _hook(page)
    page.close()
    assert h["closes"][0]["code"] == 1008
    assert "token" in h["message"]
