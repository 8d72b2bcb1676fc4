"""The run-time commands of ``talker`` (DESIGN §8): ``serve``, ``stream``, ``mic``, ``animate``.

Arguments are parsed here only; each command hands plain values or config dataclasses to library
code. ``talker.cli`` puts these beside the offline commands of ``models.training.cli``.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from models.errors import ConfigError
from realtime.admission import AdmissionConfig
from talker.args import non_negative_float, positive_int

__all__ = ["TOKEN_ENV", "add_commands", "load_model", "serve_token"]

TOKEN_ENV = "TALKER_TOKEN"  # the serve token from the environment (not visible in `ps`)


def add_commands(sub: argparse._SubParsersAction) -> None:
    for add in (_add_serve, _add_stream, _add_mic, _add_animate):
        add(sub)


# ----------------------------------------------------------------------------------- serving
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "weights" / "default.safetensors"


def load_model(checkpoint: str | None, random_model: bool = False):  # -> models.net.talker.Talker
    """The checkpoint named, else the shipped default; ``random_model``: an untrained model of
    the real class (for development before weights exist; it says so in /health)."""
    from models.net.talker import Talker

    if random_model:
        from models.net.random_model import random_talker

        return random_talker()
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not path.is_file():
        hint = ("pass --checkpoint PATH" if checkpoint
                else "run `make train-default` or pass --checkpoint")
        raise ConfigError(f"model checkpoint {path} not found; {hint}")
    return Talker.from_checkpoint(path)


def _on_device(model, device: str):  # (Talker, str) -> Talker
    """Move the model to ``device`` ("cpu" or "cuda[:N]"), or say clearly why it cannot go."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA "
                           "device (the Makefile installs the CPU build; install a CUDA build "
                           "of torch on a GPU machine)")
    elif device != "cpu":
        raise ConfigError(f"--device {device}: use cpu or cuda[:N]")
    return model.to(device)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from realtime.server import ServerConfig, TalkerServer

    model = _on_device(load_model(args.checkpoint, args.random_model), args.device)
    config = ServerConfig(
        host=args.host, port=args.port, max_sessions=args.max_sessions,
        token=serve_token(args.token, args.token_file, os.environ),
        allow_origins=tuple(args.allow_origin or ()), idle_timeout_s=args.idle_timeout,
        seed=args.seed, certfile=args.certfile, keyfile=args.keyfile,
        webrtc_host=args.webrtc_host, webrtc_public_ip=args.webrtc_public_ip,
        admission=AdmissionConfig(max_connections_per_address=args.max_per_address),
    )
    from realtime.engine import EngineConfig
    from realtime.session import SessionConfig

    session = SessionConfig.for_model(model.contract, hop_frames=args.hop_frames,
                                      max_hop_frames=max(8, args.hop_frames))
    server = TalkerServer(model, config, session_config=session,
                          engine_config=EngineConfig(torch_threads=args.threads,
                                                     worker=_worker_kind(args.worker,
                                                                         args.device)))
    scheme = "https" if args.certfile else "http"
    print(f"diffusion-talker: open {scheme}://{args.host}:{args.port}/ in a browser", flush=True)
    asyncio.run(server.serve_forever())
    return 0


def _worker_kind(choice: str, device: str) -> Literal["thread", "process"]:
    if choice == "thread" or (choice == "auto" and device != "cpu"):
        return "thread"
    return "process"


def serve_token(token: str | None, token_file: str | None,
                environ: Mapping[str, str]) -> str | None:
    """The token ``serve`` requires: ``--token``, else the first line of ``--token-file``, else
    ``$TALKER_TOKEN``; None (no token) when none is given. Both flags at once is an error."""
    if token is not None and token_file is not None:
        raise ConfigError("give the token with --token or --token-file, not both")
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {token_file}: cannot read it ({exc})") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"--token-file {token_file}: the first line is empty")
        return token
    if token is None:
        token = environ.get(TOKEN_ENV) or None
    if token is not None and not token.strip():
        raise ConfigError("the token is empty")
    return token


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the viewer and the /ws protocol v1 endpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--checkpoint", help="model .safetensors (default: the shipped model)")
    p.add_argument("--random-model", action="store_true",
                   help="serve an untrained model of the real class (development only)")
    p.add_argument("--token", help="require this token in every hello (close 1008 otherwise); "
                   f"visible to other users in `ps`: prefer --token-file or ${TOKEN_ENV}")
    p.add_argument("--token-file", metavar="PATH",
                   help=f"read the token from this file's first line (default: ${TOKEN_ENV} "
                   "when set, else no token)")
    p.add_argument("--max-sessions", type=positive_int, default=32)
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="browser origin allowed to open /ws, as scheme://host[:port] "
                        "(repeatable; '*' = any). Always allowed: the server's own address "
                        "on its port, and clients that send no Origin (not browsers)")
    p.add_argument("--certfile", type=Path, metavar="PEM",
                   help="TLS certificate (chain): serve https:// and wss://")
    p.add_argument("--keyfile", type=Path, metavar="PEM",
                   help="TLS private key (default: inside --certfile)")
    p.add_argument("--webrtc-host", metavar="ADDRESS",
                   help="address for WebRTC media to bind and advertise (default: --host; "
                        "with --host 0.0.0.0, every interface)")
    p.add_argument("--webrtc-public-ip", metavar="IP",
                   help="advertise this address for WebRTC media instead (1:1 NAT, e.g. a "
                        "cloud VM's public IP with its UDP ports forwarded)")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds without a message")
    p.add_argument("--hop-frames", type=positive_int, default=1,
                   help="frames per model call (default 1: lowest latency; 3 serves more "
                        "sessions per core at up to 67 ms more latency)")
    p.add_argument("--max-per-address", type=positive_int,
                   default=AdmissionConfig.max_connections_per_address,
                   help="open WebSockets one client address may hold (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed of per-session noise")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the inference worker (default 1; 0 = all cores)")
    p.add_argument("--worker", choices=("auto", "process", "thread"), default="auto",
                   help="where the model runs: its own process, so that inference and the "
                        "event loop do not share one interpreter lock (auto: on CPU), or a "
                        "thread of the server (auto: on CUDA)")
    p.add_argument("--device", default="cpu",
                   help="where the model runs: cpu (default) or cuda[:N] (one GPU serves "
                        "every session, batched)")
    p.set_defaults(func=_cmd_serve)


# ----------------------------------------------------------------------------------- clients
def _print_summary(summary: dict) -> None:
    s, c = summary["server_latency_ms"], summary["client_latency_ms"]
    print(f"frames {summary['frames']} (server end: {summary['end_frames']}), "
          f"gaps {summary['gaps']}, dropped {summary['dropped_frames']}, fps {summary['fps']}")
    print(f"motion latency server p50/p95/p99 {s['p50']}/{s['p95']}/{s['p99']} ms; "
          f"client p50/p95/p99 {c['p50']}/{c['p95']}/{c['p99']} ms")


def _cmd_stream(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from realtime.client import StreamOptions, read_wav, stream_file, stream_file_webrtc

    if args.webrtc and args.fast:
        raise ConfigError("--fast cannot be used with --webrtc: a WebRTC track plays in real time")
    audio, rate = read_wav(Path(args.input))
    options = StreamOptions(identity=args.identity, realtime=not args.fast, token=args.token,
                            format=args.format, weights=args.weights,
                            ssl_context=_ssl_context(args.cafile))
    run = stream_file_webrtc if args.webrtc else stream_file
    result = asyncio.run(run(args.url, audio, rate, options))
    summary = result.summary()
    _print_summary(summary)
    if args.out:
        result.save_npz(Path(args.out))
        print(f"frames saved to {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="stream a WAV file to a server as a real-time microphone")
    p.add_argument("input", help="WAV file (8-48 kHz, any channel count)")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--identity", help="talking style name, or 'auto'")
    p.add_argument("--fast", action="store_true", help="send as fast as possible, not paced")
    p.add_argument("--webrtc", action="store_true",
                   help="send the audio as a WebRTC track (as a browser does), not over /ws")
    p.add_argument("--token")
    p.add_argument("--format", choices=("f16", "f32", "coeffs"), default="f16",
                   help="frames as vertices (f16, f32) or as the model's coefficients (coeffs, "
                   "saved with their names)")
    p.add_argument("--weights", action="store_true", help="also ask for ARKit weights")
    p.add_argument("--out", help="save frames to this .npz")
    p.add_argument("--json", help="write the latency summary to this JSON file")
    p.add_argument("--cafile", help="PEM certificate(s) to trust for a wss:// server")
    p.set_defaults(func=_cmd_stream)


def _ssl_context(cafile: str | None) -> ssl.SSLContext | None:
    """A TLS context trusting ``cafile`` (for a self-signed wss:// server), or None."""
    if cafile is None:
        return None
    if not Path(cafile).is_file():
        raise ConfigError(f"--cafile {cafile}: no such file")
    try:
        return ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError(f"--cafile {cafile}: not a PEM certificate ({exc})") from exc


def _cmd_mic(args: argparse.Namespace) -> int:
    import asyncio

    from realtime.mic import run_mic

    summary = asyncio.run(run_mic(args.url, identity=args.identity, token=args.token,
                                  seconds=args.seconds, device=args.device,
                                  ssl_context=_ssl_context(args.cafile)))
    _print_summary(summary)
    return 0


def _add_mic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mic", help="stream the live microphone (sounddevice) to a server")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--identity", help="talking style name, or 'auto'")
    p.add_argument("--token")
    p.add_argument("--device", help="input device name or index (default: the system default)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0 = Ctrl-C)")
    p.add_argument("--cafile", help="PEM certificate(s) to trust for a wss:// server")
    p.set_defaults(func=_cmd_mic)


def _cmd_animate(args: argparse.Namespace) -> int:
    import numpy as np

    from realtime.audio import resample
    from realtime.client import read_wav

    audio, rate = read_wav(Path(args.input))  # bad input fails before the model loads
    model = load_model(args.checkpoint)
    contract = model.contract
    if args.subject is not None and args.subject not in model.subjects:
        known = ", ".join(sorted(model.subjects)) or "none (this model has one template)"
        raise ConfigError(f"--subject {args.subject}: not a subject of this model; known: {known}")
    sr = contract.sample_rate_hz
    audio = resample(audio, rate, sr) if rate != sr else audio
    identity = args.identity
    if identity == "auto":
        index, _ = model.pick_identity(audio[: round(contract.identity_pick_s * sr)])
        identity = model.identities[int(index)]
        print(f"auto identity: {identity}")
    coeffs = model.generate(audio, identity, steps=args.steps, seed=args.seed,
                            guidance=args.guidance)
    vertices = model.vertices(coeffs, subject=args.subject)
    template = model.subjects[args.subject] if args.subject else contract.basis.template
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, coeffs=coeffs, vertices=vertices.astype(np.float32),
                        names=np.asarray(contract.basis.names), fps=np.float32(contract.fps),
                        template=template.astype(np.float32), faces=contract.basis.faces,
                        identity=np.asarray(identity or "mean"))
    print(f"{len(coeffs)} frames ({len(coeffs) / contract.fps:.2f} s) written to {out}")
    return 0


def _add_animate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("animate", help="offline: a WAV file in, face motion (.npz) out")
    p.add_argument("input", help="WAV file")
    p.add_argument("--out", required=True, help="output .npz (coeffs, vertices, fps)")
    p.add_argument("--checkpoint", help="model (default: the shipped model)")
    p.add_argument("--identity", help="talking style name, or 'auto' (default: mean style)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=non_negative_float, metavar="G",
                   help="classifier-free guidance scale on the audio (default: the model's)")
    p.add_argument("--subject",
                   help="put the motion on this training subject's own face (models trained on "
                        "VOCASET/BIWI-style data keep every subject's template)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_animate)
