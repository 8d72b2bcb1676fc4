"""The one command-line entry point, ``talker`` (DESIGN §8). Arguments are parsed here only;
each subcommand hands plain values or config dataclasses to library code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("talker")


class CliError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# ---------------------------------------------------------------------------------------- corpus
def _cmd_corpus(args: argparse.Namespace) -> int:
    from models.corpus.generator import CorpusConfig, generate_corpus

    if not args.out:
        raise CliError("talker corpus needs --out DIR (or: talker corpus preview DIR ...)")
    config = CorpusConfig(talkers=args.talkers, utterances=args.utterances, seed=args.seed)
    generate_corpus(config, Path(args.out), workers=args.workers, progress=not args.quiet)
    print(f"corpus written to {args.out}")
    return 0


def _cmd_corpus_preview(args: argparse.Namespace) -> int:
    from models.corpus.preview import render_preview

    render_preview(Path(args.dir), args.utterance, Path(args.out))
    print(f"preview written to {args.out}")
    return 0


def _add_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="generate the talking-face corpus (espeak-ng speech + rig)")
    p.add_argument("--out", help="output folder (VOCASET layout); required to generate")
    p.add_argument("--talkers", type=_positive_int, default=16)
    p.add_argument("--utterances", type=_positive_int, default=120, help="per talker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive_int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_corpus)
    psub = p.add_subparsers(dest="corpus_command")
    pv = psub.add_parser("preview", help="plot waveform, phonemes and weight curves")
    pv.add_argument("dir", help="corpus folder")
    pv.add_argument("--utterance", required=True, help="utterance id, e.g. T00_U0000")
    pv.add_argument("--out", required=True, help="PNG path")
    pv.set_defaults(func=_cmd_corpus_preview)


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
        raise CliError(f"model checkpoint {path} not found; {hint}")
    return Talker.from_checkpoint(path)


def _on_device(model, device: str):  # (Talker, str) -> Talker
    """Move the model to ``device`` ("cpu" or "cuda[:N]"), or say clearly why it cannot go."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA "
                           "device (the Makefile installs the CPU build; install a CUDA build "
                           "of torch on a GPU machine)")
    elif device != "cpu":
        raise CliError(f"--device {device}: use cpu or cuda[:N]")
    return model.to(device)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from realtime.server import ServerConfig, TalkerServer

    model = _on_device(load_model(args.checkpoint, args.random_model), args.device)
    config = ServerConfig(
        host=args.host, port=args.port, token=args.token, max_sessions=args.max_sessions,
        allow_origins=tuple(args.allow_origin or ()), idle_timeout_s=args.idle_timeout,
        seed=args.seed,
    )
    from realtime.engine import EngineConfig

    server = TalkerServer(model, config, engine_config=EngineConfig(torch_threads=args.threads))
    print(f"diffusion-talker: open http://{args.host}:{args.port}/ in a browser", flush=True)
    asyncio.run(server.serve_forever())
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the viewer and the /ws protocol v1 endpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--checkpoint", help="model .safetensors (default: the shipped model)")
    p.add_argument("--random-model", action="store_true",
                   help="serve an untrained model of the real class (development only)")
    p.add_argument("--token", help="require this token in every hello (close 1008 otherwise)")
    p.add_argument("--max-sessions", type=_positive_int, default=32)
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="browser origin allowed to connect (repeatable; '*' = any). "
                        "Default: the page's own origin and non-browser clients")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds without a message")
    p.add_argument("--seed", type=int, default=0, help="base seed of per-session noise")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the inference worker (default 1; 0 = all cores)")
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
        raise CliError("--fast cannot be used with --webrtc: a WebRTC track plays in real time")
    audio, rate = read_wav(Path(args.input))
    options = StreamOptions(identity=args.identity, realtime=not args.fast, token=args.token,
                            format=args.format, weights=args.weights)
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
    p.add_argument("--format", choices=("f16", "f32"), default="f16")
    p.add_argument("--weights", action="store_true", help="also ask for ARKit weights")
    p.add_argument("--out", help="save frames to this .npz")
    p.add_argument("--json", help="write the latency summary to this JSON file")
    p.set_defaults(func=_cmd_stream)


def _cmd_mic(args: argparse.Namespace) -> int:
    import asyncio

    from realtime.mic import run_mic

    summary = asyncio.run(run_mic(args.url, identity=args.identity, token=args.token,
                                  seconds=args.seconds, device=args.device))
    _print_summary(summary)
    return 0


def _add_mic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mic", help="stream the live microphone (sounddevice) to a server")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--identity", help="talking style name, or 'auto'")
    p.add_argument("--token")
    p.add_argument("--device", help="input device name or index (default: the system default)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0 = Ctrl-C)")
    p.set_defaults(func=_cmd_mic)


# ------------------------------------------------------------------------------------ models
def _load_dataset(path: str):
    from models.data.dataset import TalkingFaceDataset

    if not Path(path).is_dir():
        raise CliError(f"no dataset folder {path}; make one with `talker corpus --out {path}`")
    return TalkingFaceDataset.load(Path(path))


def _set_threads(threads: int | None) -> None:
    """Torch threads of a training/eval command; None keeps torch's default (all cores)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.training.train import TrainConfig, train

    _set_threads(args.threads)
    config = replace(TrainConfig.preset(args.preset), objective=args.objective)
    if args.steps:
        config = replace(config, n_steps=args.steps)
    path = train(_load_dataset(args.data), config, Path(args.out), seed=args.seed,
                 progress=not args.quiet, resume=not args.no_resume)
    print(f"{'regression baseline' if args.objective == 'regression' else 'teacher'} "
          f"checkpoint: {path}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the diffusion teacher on a corpus")
    p.add_argument("--data", required=True, help="corpus folder (ours or VOCASET/BIWI-style)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl)")
    p.add_argument("--preset", choices=("tiny", "default", "full"), default="default")
    p.add_argument("--steps", type=_positive_int, help="override the preset's step count")
    p.add_argument("--objective", choices=("diffusion", "regression"), default="diffusion",
                   help="regression: the deterministic baseline (same network, no diffusion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a run")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_distill(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.training.distill import DistillConfig, distill

    _set_threads(args.threads)
    config = DistillConfig.preset(args.preset)
    if args.iters:
        config = replace(config, iters_per_round=args.iters)
    if args.start_steps:
        config = replace(config, start_steps=args.start_steps)
    path = distill(Path(args.teacher), _load_dataset(args.data), Path(args.out), steps=args.steps,
                   config=config, seed=args.seed, progress=not args.quiet)
    print(f"student checkpoint: {path}")
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="progressive distillation of a teacher to few steps")
    p.add_argument("--teacher", required=True, help="teacher .safetensors")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=_positive_int, default=8)
    p.add_argument("--preset", choices=("tiny", "default", "full"), default="default")
    p.add_argument("--iters", type=_positive_int, help="override iterations per halving round")
    p.add_argument("--start-steps", type=_positive_int,
                   help="the teacher's grid to halve from (default 64); e.g. 8 with a student_8 "
                        "as --teacher continues to 4 and 2 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_distill)


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from models.training.evaluate import EvalConfig, evaluate_checkpoint

    config = EvalConfig(max_utterances=args.max_utterances, steps=tuple(args.steps or ()),
                        teacher=args.teacher, baseline=args.baseline, seed=args.seed)
    results = evaluate_checkpoint(Path(args.checkpoint), _load_dataset(args.data), config)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results.get("summary", results), indent=1))
    print(f"results written to {args.json}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="metrics (LVE, FDD, MVE, identity) of a checkpoint, as JSON")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--json", required=True, help="output JSON path")
    p.add_argument("--teacher", help="teacher checkpoint to compare with (all steps and DDIM)")
    p.add_argument("--baseline", help="regression checkpoint (train --objective regression)")
    p.add_argument("--steps", type=_positive_int, action="append",
                   help="DDIM step counts to evaluate the teacher at (repeatable)")
    p.add_argument("--max-utterances", type=_positive_int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_eval)


def _cmd_animate(args: argparse.Namespace) -> int:
    import numpy as np

    from realtime.audio import resample
    from realtime.client import read_wav

    audio, rate = read_wav(Path(args.input))  # bad input fails before the model loads
    model = load_model(args.checkpoint)
    audio16 = resample(audio, rate, 16000) if rate != 16000 else audio
    identity = args.identity
    if identity == "auto":
        index, _ = model.pick_identity(audio16[: 16000 * 3])
        identity = model.identities[int(index)]
        print(f"auto identity: {identity}")
    coeffs = model.generate(audio16, identity, steps=args.steps, seed=args.seed)
    vertices = model.rig_vertices(coeffs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, coeffs=coeffs, vertices=vertices.astype(np.float32),
                        names=np.asarray(model.basis.names), fps=np.float32(30),
                        template=model.basis.template, identity=np.asarray(identity or "mean"))
    print(f"{len(coeffs)} frames ({len(coeffs) / 30:.2f} s) written to {out}")
    return 0


def _add_animate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("animate", help="offline: a WAV file in, face motion (.npz) out")
    p.add_argument("input", help="WAV file")
    p.add_argument("--out", required=True, help="output .npz (coeffs, vertices, fps)")
    p.add_argument("--checkpoint", help="model (default: the shipped model)")
    p.add_argument("--identity", help="talking style name, or 'auto' (default: mean style)")
    p.add_argument("--steps", type=_positive_int, help="sampling steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_animate)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talker", description="diffusion-talker: speech in, streaming 3D face motion out"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    adders: list[Callable[[argparse._SubParsersAction], None]] = [
        _add_serve, _add_stream, _add_mic, _add_corpus, _add_train, _add_distill, _add_eval,
        _add_animate,
    ]
    for add in adders:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"talker: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the project's own errors become one clear line
        if _is_user_error(exc) and not args.verbose:
            print(f"talker: error: {exc}", file=sys.stderr)
            return 2
        raise


def _is_user_error(exc: BaseException) -> bool:
    """Errors raised on purpose by this project (they say what is wrong and how to fix it),
    and file-system refusals. Anything else is a bug and keeps its traceback."""
    package = type(exc).__module__.split(".")[0]
    return package in ("models", "realtime") or isinstance(exc, (FileNotFoundError,
                                                                 PermissionError))
