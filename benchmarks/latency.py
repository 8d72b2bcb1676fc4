"""Motion latency and concurrency of a real ``talker serve`` (DESIGN §6, §10).

Starts ``talker serve`` as a subprocess on 127.0.0.1 (a free port), waits for ``/health``, then
for each step of a ladder of concurrent sessions (default 1, 2, 4, 8, 16, 32, 64; it stops after
the first step whose p95 passes ``--stop-p95-ms``) streams espeak-ng speech (sentences with
pauses, one voice per session) paced like a microphone over real WebSockets, at ``--input-rate``
(16 kHz, or 48 kHz as browsers capture), asking for ``--format`` frames (coefficients, as the
viewer does, or vertices), with starts spread over ``--stagger-s`` (0: all together), and records
per frame:

- server-side motion latency (``frame.latency_ms``: frame sent - its audio arrived), and
- client-side motion latency (frame received - the audio sample at its ``t`` was sent).

Per step: p50/p95/p99 of both, frames delivered vs expected (ceil(duration * 30) a session), seq
gaps, drops the server reported, bytes received per second per stream, the real-time factor
(inference-worker busy seconds per second of audio), and the server process's CPU % (100 = one
core) and RSS, sampled with psutil during the step. Then the same through WebRTC (aiortc client
peers, Opus at 48 kHz) for 1 and 4 sessions to show what that transport adds. Writes JSON and a
PNG plot, prints a table.

    python -m benchmarks.latency                       # the trained default model, full ladder
    python -m benchmarks.latency --quick               # ~20 s: tiny random model, 1 and 2 streams
    python -m benchmarks.latency --checkpoint PATH --streams 1,4,16 --seconds 20
    python -m benchmarks.latency --streams 1 --input-rate 48000      # a browser's capture rate
    python -m benchmarks.latency --streams 64 --stagger-s 0 --no-webrtc  # 64 starting together
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.common import (
    FPS,
    REPO,
    SAMPLE_RATE,
    VOICES,
    add_common_args,
    default_out,
    espeak_utterance,
    format_table,
    machine_info,
    parse_ints,
    percentiles,
    print_machine,
    run_main,
    seed_everything,
    setup_torch,
    tiny_checkpoint,
    write_json,
)
from models.errors import ConfigError

LADDER = (1, 2, 4, 8, 16, 32, 64)
WEBRTC_LADDER = (1, 4)
DEFAULT_CHECKPOINT = REPO / "models" / "weights" / "default.safetensors"


# ---------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def talker_command() -> list[str]:
    """The ``talker`` console script of this interpreter (``python -m talker`` is the same)."""
    script = Path(sys.executable).with_name("talker")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "talker"]


def read_tree(pid: int) -> dict[str, float]:
    """CPU seconds (user + system), RSS bytes, threads and open fds of a live process and its
    children (the server's inference process), summed (psutil)."""
    root = psutil.Process(pid)
    total = {"cpu_s": 0.0, "rss": 0.0, "threads": 0.0, "fds": 0.0}
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error), proc.oneshot():
            cpu = proc.cpu_times()
            total["cpu_s"] += cpu.user + cpu.system
            total["rss"] += proc.memory_info().rss
            total["threads"] += proc.num_threads()
            total["fds"] += proc.num_fds()
    return total


def read_proc(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, threads) of the server and its inference process."""
    tree = read_tree(pid)
    return tree["cpu_s"], int(tree["rss"]), int(tree["threads"])


class ProcSampler:
    """Samples a process's CPU time and RSS every ``interval_s`` while a step runs."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float, int, int]] = []  # (t, cpu_s, rss, threads)
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error, OSError):  # the server may have exited
            self.samples.append((time.monotonic(), *read_proc(self.pid)))

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()
        s = self.samples
        if len(s) < 2:
            return {"cpu_percent_mean": None, "cpu_percent_max_1s": None, "rss_mb_mean": None,
                    "rss_mb_max": None, "threads_max": None}
        mean = 100.0 * (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])
        peak, j = 0.0, 0
        for i in range(len(s)):  # busiest window of at least one second
            while j < len(s) and s[j][0] - s[i][0] < 1.0:
                j += 1
            if j >= len(s):
                break
            peak = max(peak, 100.0 * (s[j][1] - s[i][1]) / (s[j][0] - s[i][0]))
        rss = [x[2] for x in s]
        return {"cpu_percent_mean": round(mean, 1), "cpu_percent_max_1s": round(peak or mean, 1),
                "rss_mb_mean": round(float(np.mean(rss)) / 2**20, 1),
                "rss_mb_max": round(max(rss) / 2**20, 1), "threads_max": max(x[3] for x in s)}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    command: list[str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health",
                                    timeout=timeout_s) as r:
            return dict(json.loads(r.read()))

    def checked_health(self) -> dict[str, Any]:
        """/health, or ConfigError with the server's log if it died or stopped answering."""
        if self.proc.poll() is not None:
            raise ConfigError(f"the server exited with {self.proc.returncode}:\n"
                             + self.log_tail())
        try:
            return self.health()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ConfigError(f"the server's /health failed ({exc}):\n{self.log_tail()}") from exc

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the server closes its sessions and exits
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(model_args: list[str], extra: list[str], max_sessions: int, seed: int,
                 workdir: Path, startup_timeout_s: float) -> Server:
    port = free_port()
    command = [*talker_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-sessions", str(max_sessions), "--max-per-address", str(max_sessions),
               "--seed", str(seed), *model_args, *extra]
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                start_new_session=True)
    server = Server(proc, port, command, log_path)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"`{' '.join(command)}` exited with {proc.returncode}:\n"
                             + server.log_tail())
        try:
            server.health(timeout_s=2.0)
            return server
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)
    server.stop()
    raise ConfigError(f"the server gave no /health within {startup_timeout_s:g} s:\n"
                     + server.log_tail())


# -------------------------------------------------------------------------------- sessions
@dataclass
class Outcome:
    """One session's frames, as the client saw them."""

    expected: int
    seq: list[int] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    end_frames: int | None = None
    dropped_reported: int = 0
    wall_s: float = 0.0
    bytes_per_s: float | None = None  # received, frames and all, per second of the session
    error: str | None = None

    @property
    def gaps(self) -> int:
        return int(self.seq[-1] + 1 - len(self.seq)) if self.seq else 0


async def session(url: str, audio: np.ndarray, rate: int, delay_s: float, timeout_s: float,
                  transport: str, frame_format: str) -> Outcome:
    """One paced session over the WebSocket ("ws") or as a WebRTC track ("webrtc"), sending
    ``audio`` at ``rate`` Hz and asking for ``frame_format`` frames."""
    from realtime.client import ClientError, StreamOptions, stream_file, stream_file_webrtc

    out = Outcome(expected=math.ceil(audio.size * FPS / rate))
    await asyncio.sleep(delay_s)
    options = StreamOptions(realtime=True, keep_vertices=False, format=frame_format)
    run = stream_file if transport == "ws" else stream_file_webrtc
    try:
        result = await asyncio.wait_for(run(url, audio, rate, options), timeout_s)
    except (ClientError, TimeoutError, OSError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    out.seq, out.server_ms = list(result.seq), list(result.server_latency_ms)
    out.client_ms, out.end_frames = list(result.client_latency_ms), result.end_frames
    out.dropped_reported = max((s.dropped_frames for s in result.stats), default=0)
    out.wall_s = result.wall_s
    out.bytes_per_s = result.bytes_per_s
    return out


# ----------------------------------------------------------------------------------- steps
async def run_step(server: Server, transport: str, audios: list[np.ndarray], rate: int,
                   stagger_s: float, frame_format: str) -> dict[str, Any]:
    """All sessions of one ladder step, concurrently; session i starts after i/n * stagger_s
    (0: all together; else spread, as independent users would) -> the step's summary."""
    n = len(audios)
    duration = audios[0].size / rate
    timeout = duration + 60.0
    before = await asyncio.to_thread(server.checked_health)
    usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    sampler = ProcSampler(server.proc.pid)
    sampler.start()
    outcomes = await asyncio.gather(*(session(server.url, a, rate, i * stagger_s / n, timeout,
                                              transport, frame_format)
                                      for i, a in enumerate(audios)))
    proc = await sampler.stop()
    usage1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall0
    after = await asyncio.to_thread(server.checked_health)
    ok = [o for o in outcomes if o.error is None]
    busy = after["engine"]["busy_s"] - before["engine"]["busy_s"]
    batches = after["engine"]["batches"] - before["engine"]["batches"]
    hops = after["engine"]["hops"] - before["engine"]["hops"]
    client_cpu = (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime)
    per_stream = [o.bytes_per_s for o in ok if o.bytes_per_s is not None]
    return {
        "transport": transport,
        "format": frame_format,
        "input_rate_hz": rate,
        "stagger_s": stagger_s,
        "streams": n,
        "bytes_per_s_per_stream": round(float(np.mean(per_stream))) if per_stream else None,
        "audio_s": round(duration, 3),
        "sessions_ok": len(ok),
        "errors": [o.error for o in outcomes if o.error is not None],
        "server_latency_ms": percentiles([x for o in ok for x in o.server_ms]),
        "client_latency_ms": percentiles([x for o in ok for x in o.client_ms]),
        "frames": {
            "delivered": sum(len(o.seq) for o in outcomes),
            "expected": sum(o.expected for o in outcomes),
            "per_session": [[len(o.seq), o.expected] for o in outcomes],
        },
        "gaps": sum(o.gaps for o in outcomes),
        "dropped_reported": sum(o.dropped_reported for o in outcomes),
        "real_time_factor": round(busy / (n * duration), 4),
        "wall_over_audio": round(max((o.wall_s for o in ok), default=0.0) / duration, 3),
        "engine": {"busy_s": round(busy, 3), "batches": batches, "hops": hops,
                   "mean_batch": round(hops / batches, 2) if batches else None},
        "server_process": proc,
        "client_cpu_percent": round(100.0 * client_cpu / wall, 1),
    }


def worst_p95(step: dict[str, Any]) -> float:
    values = [step[k]["p95"] for k in ("server_latency_ms", "client_latency_ms")]
    return max((v for v in values if v is not None), default=math.inf)


COL = 7  # column width of the table printed row by row
TABLE_HEADERS = ("via", "streams", "srv p50", "srv p95", "srv p99", "cli p50", "cli p95",
                 "cli p99", "frames", "gaps", "drops", "RTF", "srv CPU%", "srv RSS MB",
                 "KiB/s", "errors")


def table_row(step: dict[str, Any]) -> list[Any]:
    s, c, f = step["server_latency_ms"], step["client_latency_ms"], step["frames"]
    return [step["transport"], step["streams"], s["p50"], s["p95"], s["p99"], c["p50"],
            c["p95"], c["p99"], f"{f['delivered']}/{f['expected']}", step["gaps"],
            step["dropped_reported"], step["real_time_factor"],
            step["server_process"]["cpu_percent_mean"], step["server_process"]["rss_mb_max"],
            _kib(step["bytes_per_s_per_stream"]), len(step["errors"])]


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


# ------------------------------------------------------------------------------------ plot
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    fig, (ax, ax_cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    ws = [s for s in results["steps"] if s["sessions_ok"]]
    rtc = [s for s in results["webrtc"] if s["sessions_ok"]]
    colours = {"p50": "tab:green", "p95": "tab:orange", "p99": "tab:red"}
    for q, colour in colours.items():
        x = [s["streams"] for s in ws]
        ax.plot(x, [s["server_latency_ms"][q] for s in ws], "o-", color=colour,
                label=f"server {q} (WS)")
        ax.plot(x, [s["client_latency_ms"][q] for s in ws], "s--", color=colour,
                label=f"client {q} (WS)")
        if rtc:
            ax.plot([s["streams"] for s in rtc], [s["client_latency_ms"][q] for s in rtc], "^",
                    color=colour, markersize=9, label=f"client {q} (WebRTC)")
    for ms, text in ((250, "first bar 250 ms"), (120, "goal 120 ms")):
        ax.axhline(ms, color="grey", linestyle=":", linewidth=1)
        ax.annotate(text, (1, ms), fontsize=8, color="grey", va="bottom")
    ticks = sorted({s["streams"] for s in results["steps"] + results["webrtc"]})
    for axis in (ax, ax_cpu):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("motion latency (ms)")
    ax.set_title("Motion latency vs concurrent streams")
    ax.legend(fontsize=7, ncol=2)
    x = [s["streams"] for s in results["steps"]]
    ax_cpu.plot(x, [s["server_process"]["cpu_percent_mean"] for s in results["steps"]], "o-",
                label="server CPU % (100 = 1 core)")
    ax_cpu.plot(x, [100 * s["real_time_factor"] for s in results["steps"]], "s--",
                label="inference busy % of audio time")
    ax_cpu.set_xlabel("concurrent streams")
    ax_cpu.set_ylabel("%")
    ax_rss = ax_cpu.twinx()
    ax_rss.plot(x, [s["server_process"]["rss_mb_max"] for s in results["steps"]], "^:",
                color="tab:purple", label="server RSS (MB)")
    ax_rss.set_ylabel("RSS MB")
    ax_cpu.legend(loc="upper left", fontsize=8)
    ax_rss.legend(loc="lower right", fontsize=8)
    m = results["machine"]
    fig.suptitle(f"{results['model']} | {m['cpu']}, {m['cores']} cores | torch {m['torch']} | "
                 f"{str(m['commit'])[:10]}" + (" | QUICK" if results["quick"] else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    model = p.add_mutually_exclusive_group()
    default = DEFAULT_CHECKPOINT.relative_to(REPO)
    model.add_argument("--checkpoint",
                       help=f"model (default: {default} when present, else --random-model)")
    model.add_argument("--random-model", action="store_true",
                       help="serve an untrained default-size model (talker serve --random-model)")
    model.add_argument("--tiny", action="store_true",
                       help="serve the tiny random model (saved to a temp checkpoint)")
    p.add_argument("--server-threads", type=int,
                   help="torch threads of the server's inference worker (talker serve --threads)")
    p.add_argument("--server-worker", choices=("auto", "process", "thread"), default="auto",
                   help="where the server runs the model (talker serve --worker)")
    p.add_argument("--streams", type=parse_ints, help="ladder, e.g. 1,2,4 (default 1,2,4,8,16,32;"
                                                        " quick 1,2)")
    p.add_argument("--webrtc", type=parse_ints,
                   help="WebRTC stream counts (default 1,4; quick 1)")
    p.add_argument("--format", choices=("coeffs", "f16", "f32"), default="coeffs",
                   help="frames asked for: coefficients (the viewer's default) or vertices")
    p.add_argument("--input-rate", type=int, default=SAMPLE_RATE,
                   help="rate the clients send at (16000; 48000 as browsers capture)")
    p.add_argument("--no-webrtc", action="store_true")
    p.add_argument("--seconds", type=float, help="audio per session (default 12; quick 3)")
    p.add_argument("--stop-p95-ms", type=float, default=1000.0,
                   help="stop the ladder after a step whose server or client p95 passes this")
    p.add_argument("--stagger-s", type=float, default=0.1,
                   help="session starts are spread over this (one hop)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    if args.quick:
        args.streams = args.streams or (1, 2)
        args.webrtc = args.webrtc or (1,)
        args.seconds = args.seconds or 3.0
        if not (args.checkpoint or args.random_model):
            args.tiny = True
    args.streams = args.streams or LADDER
    args.webrtc = () if args.no_webrtc else (args.webrtc or WEBRTC_LADDER)
    args.seconds = args.seconds or 12.0
    return args


async def bench(args: argparse.Namespace, server: Server, workdir: Path) -> dict[str, Any]:
    from models.audio import resample

    n_max = max(args.streams + tuple(args.webrtc))
    rate = args.input_rate
    audios = [espeak_utterance(args.seconds, VOICES[i % len(VOICES)], i, workdir / "wav",
                               args.seed) for i in range(n_max)]
    if rate != SAMPLE_RATE:  # as a browser or a 48 kHz microphone would send it
        audios = [resample(a, SAMPLE_RATE, rate) for a in audios]
    print(f"speech: {n_max} utterances of {args.seconds:g} s at {rate} Hz, voices "
          f"{', '.join(VOICES[:min(n_max, len(VOICES))])}; {args.format} frames", flush=True)
    warm = await session(server.url, audios[0][: rate * 2], rate, 0.0, 120.0, "ws",
                         args.format)  # not measured
    if warm.error is not None:
        raise ConfigError(f"warm-up session failed: {warm.error}\n{server.log_tail()}")
    steps: list[dict[str, Any]] = []
    stopped = None
    print(format_table(TABLE_HEADERS, [], COL), flush=True)
    for n in args.streams:
        step = await run_step(server, "ws", audios[:n], rate, args.stagger_s, args.format)
        steps.append(step)
        print(format_table(TABLE_HEADERS, [table_row(step)], COL).splitlines()[-1], flush=True)
        if step["errors"]:
            stopped = f"{len(step['errors'])} session(s) failed at {n} streams"
            break
        if worst_p95(step) > args.stop_p95_ms:
            stopped = f"p95 {worst_p95(step):.0f} ms > {args.stop_p95_ms:g} ms at {n} streams"
            break
        await asyncio.sleep(0.5)
    webrtc: list[dict[str, Any]] = []
    for n in args.webrtc:
        step = await run_step(server, "webrtc", audios[:n], rate, args.stagger_s, args.format)
        webrtc.append(step)
        print(format_table(TABLE_HEADERS, [table_row(step)], COL).splitlines()[-1], flush=True)
        await asyncio.sleep(0.5)
    return {"steps": steps, "webrtc": webrtc, "stopped": stopped}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    seed_everything(args.seed)
    threads = setup_torch(args.device, args.threads or (1 if args.quick else None))
    out = Path(args.out) if args.out else default_out("latency", args.quick)
    extra: list[str] = ["--device", args.device]  # on a GPU machine: streams per GPU
    # The server's inference threads: --server-threads, else the server's own default (1).
    server_threads: Any = args.server_threads if args.server_threads else "server default (1)"
    if args.server_threads:
        extra += ["--threads", str(args.server_threads)]
    extra += ["--worker", args.server_worker]
    print(f"server torch threads: {server_threads}; model worker: {args.server_worker}",
          flush=True)
    info = machine_info(args.device, threads)
    print_machine(info)
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        workdir = Path(tmp)
        if args.tiny:
            model_args, model = ["--checkpoint", str(tiny_checkpoint(workdir, args.seed))], \
                "tiny random model (models.net.random_model.TINY)"
        elif args.random_model:
            model_args, model = ["--random-model"], "random default-size model"
        else:
            ckpt = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
            if ckpt.is_file():
                model_args, model = ["--checkpoint", str(ckpt)], str(ckpt)
            elif args.checkpoint:
                raise ConfigError(f"no checkpoint {ckpt}")
            else:
                print(f"{ckpt} not found: serving --random-model", flush=True)
                model_args, model = ["--random-model"], "random default-size model"
        n_max = max(args.streams + tuple(args.webrtc))
        server = start_server(model_args, extra, n_max + 4, args.seed, workdir,
                              args.startup_timeout)
        try:
            health = server.health()
            print(f"server pid {server.proc.pid} on port {server.port}: {model} "
                  f"{health.get('model', '')}", flush=True)
            runs = asyncio.run(bench(args, server, workdir))
        finally:
            server.stop()
    results: dict[str, Any] = {
        "benchmark": "latency",
        "quick": bool(args.quick),
        "machine": info,
        "model": model,
        "server": {"command": server.command, "torch_threads": server_threads,
                   "worker": args.server_worker, "model": health.get("model")},
        "config": {"streams": list(args.streams), "webrtc": list(args.webrtc),
                   "seconds": args.seconds, "stop_p95_ms": args.stop_p95_ms,
                   "stagger_s": args.stagger_s, "seed": args.seed, "fps": FPS,
                   "format": args.format, "input_rate_hz": args.input_rate,
                   "voices": list(VOICES)},
        **runs,
        "wall_s": round(time.monotonic() - started, 1),
    }
    write_json(out, results)
    png = out.with_suffix(".png")
    plot(results, png)
    print()
    print(format_table(TABLE_HEADERS, [table_row(s) for s in runs["steps"] + runs["webrtc"]]))
    print("latency in ms (srv: frame.latency_ms; cli: received - audio sent); RTF: inference busy "
          "s per audio s; srv CPU%: 100 = one core")
    if runs["stopped"]:
        print(f"ladder stopped: {runs['stopped']}")
    print(f"results: {out}  plot: {png}  ({results['wall_s']} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
