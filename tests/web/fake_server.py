"""A stand-in for ``talker serve`` for browser tests of the viewer: same port layout (static
viewer at /, /assets/facecap.glb, GET /health, protocol v1 on /ws), no model.

The face is the facecap head decoded with ``models.gltf_decode`` (world space, then scaled to
metres as a rig would be, and shifted, so the viewer's glTF fit is exercised). Each frame opens
the jaw by the RMS of the audio in its 1/30 s, so a test can check that the mouth follows speech.
Frame k is sent once the audio up to t_k + LOOKAHEAD_S has arrived.

    python tests/web/fake_server.py --port 8766 [--token T] [--full] [--media DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from http import HTTPStatus
from pathlib import Path

import sys

import msgpack
import numpy as np
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
from models.gltf_decode import Glb  # noqa: E402

FPS = 30
LOOKAHEAD_S = 0.1
HEAD_MESH = 2
TO_METRES = 0.1  # facecap world units are decimetres-ish; any scale works for the viewer's fit
OFFSET_M = np.array([0.0, -0.05, 0.01], dtype=np.float32)
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".glb": "model/gltf-binary",
         ".wasm": "application/wasm", ".mjs": "text/javascript", ".json": "application/json", ".wav": "audio/wav"}


def load_head(glb_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(template (V,3) f32 metres, faces (F,3) u32, jawOpen delta (V,3) f32, ARKit names)."""
    glb = Glb.from_bytes(glb_path.read_bytes())
    node = next(i for i, n in enumerate(glb.doc["nodes"]) if n.get("mesh") == HEAD_MESH)
    world = glb.node_world_matrix(node)
    prim = glb.doc["meshes"][HEAD_MESH]["primitives"][0]
    pos = glb.accessor(prim["attributes"]["POSITION"]).astype(np.float64)
    template = (pos @ world[:3, :3].T + world[:3, 3]) * TO_METRES + OFFSET_M
    names = glb.doc["meshes"][HEAD_MESH]["extras"]["targetNames"]
    jaw = glb.accessor(prim["targets"][names.index("jawOpen")]["POSITION"]).astype(np.float64)
    jaw_world = jaw @ world[:3, :3].T * TO_METRES
    faces = glb.accessor(prim["indices"]).astype(np.uint32).reshape(-1, 3)
    apple = [n.removesuffix("_L") + "Left" if n.endswith("_L") else n.removesuffix("_R") + "Right" if n.endswith("_R") else n
             for n in names if n != "tongueOut"]
    return template.astype(np.float32), faces, jaw_world.astype(np.float32), apple


class FakeServer:
    def __init__(self, glb: Path, token: str | None, full: bool, media: str = "/tmp"):
        self.media = media
        self.template, self.faces, self.jaw, self.names = load_head(glb)
        self.token = token
        self.full = full
        self.glb = glb

    # ---- HTTP -------------------------------------------------------------------------------------
    def process_request(self, connection, request):
        path = request.path.split("?")[0]
        if path == "/ws":
            return None
        if path == "/health":
            return self._response(HTTPStatus.OK, json.dumps({"ok": True, "identities": ["T00", "T01"]}).encode(), "application/json")
        file = self.glb if path == "/assets/facecap.glb" else (ROOT / "web_client" / (path.lstrip("/") or "index.html"))
        if path.startswith("/media/"):
            file = Path(self.media) / path.removeprefix("/media/")
        if not file.is_file():
            return self._response(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        return self._response(HTTPStatus.OK, file.read_bytes(), TYPES.get(file.suffix, "application/octet-stream"))

    @staticmethod
    def _response(status, body, ctype):
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return Response(status.value, status.phrase, headers, body)

    # ---- /ws --------------------------------------------------------------------------------------
    async def handler(self, ws):
        send = lambda m: ws.send(msgpack.packb(m, use_bin_type=True))  # noqa: E731
        hello = msgpack.unpackb(await ws.recv())
        if self.full:
            await send({"type": "error", "code": "server_full", "message": "no free session"})
            return await ws.close(1013, "server full")
        if self.token is not None and hello.get("token") != self.token:
            await send({"type": "error", "code": "bad_token", "message": "bad token"})
            return await ws.close(1008, "bad token")
        if hello.get("audio") == "webrtc":
            await send({"type": "error", "code": "unsupported", "message": "the fake server has no WebRTC"})
            return await ws.close(1003, "unsupported")
        rate, enc = hello["sample_rate"], hello["encoding"]
        dtype = np.float32 if enc == "pcm_f32le" else np.int16
        scale = 1.0 if enc == "pcm_f32le" else 1 / 32768
        await send({"type": "ready", "protocol": 1, "session": "fake-1", "fps": FPS, "identities": ["T00", "T01"],
                    "identity": hello.get("identity") or "T00",
                    "mesh": {"vertex_count": len(self.template), "template": self.template.tobytes(), "faces": self.faces.tobytes()},
                    "blendshapes": self.names})
        fmt = np.float16 if hello.get("format", "f16") == "f16" else np.float32
        pcm = np.zeros(0, np.float32)
        arrivals: list[tuple[int, float]] = []  # (samples received so far, monotonic time)
        seq = 0
        last_stats = time.monotonic()
        lat: list[float] = []

        async def emit(upto_samples: int):
            nonlocal seq
            while (seq + 1) * rate / FPS + LOOKAHEAD_S * rate <= upto_samples:
                a, b = int(seq * rate / FPS), int((seq + 1) * rate / FPS)
                rms = float(np.sqrt(np.mean(pcm[a:b] ** 2))) if b > a else 0.0
                open_ = min(1.0, rms * 6.0)
                verts = (self.template + open_ * self.jaw).astype(fmt)
                need = b  # frame k depicts audio at t_k: latency from when sample b arrived
                arrived = next(t for n, t in arrivals if n >= need)
                latency = (time.monotonic() - arrived) * 1000
                lat.append(latency)
                msg = {"type": "frame", "seq": seq, "t": seq / FPS, "vertices": verts.tobytes(), "latency_ms": latency}
                if hello.get("weights"):
                    w = np.zeros(len(self.names), np.float32)
                    w[self.names.index("jawOpen")] = open_
                    msg["weights"] = w.tobytes()
                await send(msg)
                seq += 1

        async for raw in ws:
            msg = msgpack.unpackb(raw)
            kind = msg.get("type")
            if kind == "audio":
                pcm = np.concatenate([pcm, np.frombuffer(msg["data"], dtype).astype(np.float32) * scale])
                arrivals.append((len(pcm), time.monotonic()))
                await emit(len(pcm))
            elif kind == "interrupt":
                pass
            elif kind == "end":
                await emit(len(pcm) + int(LOOKAHEAD_S * rate) + 1)
                await send({"type": "end", "frames": seq})
                return await ws.close(1000, "end")
            if time.monotonic() - last_stats > 1.0 and lat:
                last_stats = time.monotonic()
                await send({"type": "stats", "frames_sent": seq, "dropped_frames": 0, "skipped_hops": 0, "queue_depth": 0,
                            "audio_received_s": len(pcm) / rate,
                            "latency_p50_ms": float(np.percentile(lat[-300:], 50)),
                            "latency_p95_ms": float(np.percentile(lat[-300:], 95)),
                            "latency_p99_ms": float(np.percentile(lat[-300:], 99))})


async def main(args):
    server = FakeServer(Path(args.glb), args.token, args.full, args.media)
    async with serve(server.handler, "127.0.0.1", args.port, process_request=server.process_request, max_size=2**22):
        print(f"fake server on http://127.0.0.1:{args.port}/", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--glb", default=str(ROOT / "assets" / "facecap.glb"))
    p.add_argument("--token")
    p.add_argument("--full", action="store_true")
    p.add_argument("--media", default="/tmp", help="folder served at /media/ (test audio)")
    asyncio.run(main(p.parse_args()))
