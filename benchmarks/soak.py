"""Soak: N real-time sessions held open for T minutes against a real ``talker serve``.

Each session is one long WebSocket session: espeak-ng utterances (with their pauses) looped and
paced in real time, coefficient frames back, as the viewer runs. Every ``--sample-s`` the server
process and its inference process are sampled (RSS, threads, open file descriptors, CPU, summed;
psutil) and each session's frames of that window are summarised (motion latency p50/p95, frames,
gaps). At the end: the memory slope
(least squares over the samples after the first minute, MB/min), p95 of the first vs the last
fifth of the run, every frame accounted for. Writes JSON, prints a table.

    python -m benchmarks.soak --sessions 16 --minutes 60     # the README's figure
    python -m benchmarks.soak --quick                         # ~40 s: tiny model, 2 sessions
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    FPS,
    SAMPLE_RATE,
    VOICES,
    add_common_args,
    default_out,
    espeak_utterance,
    format_table,
    machine_info,
    percentiles,
    print_machine,
    run_main,
    seed_everything,
    setup_torch,
    tiny_checkpoint,
    write_json,
)
from benchmarks.latency import DEFAULT_CHECKPOINT, Server, read_tree, start_server
from models.errors import ConfigError

CHUNK_S = 0.02  # what a browser or sounddevice delivers


async def looped_chunks(audio: np.ndarray, seconds: float) -> AsyncIterator[np.ndarray]:
    """``audio`` over and over for ``seconds``, in 20-ms chunks paced in real time."""
    step = round(CHUNK_S * SAMPLE_RATE)
    total = round(seconds * SAMPLE_RATE)
    start = time.monotonic()
    for i, sent in enumerate(range(0, total, step)):
        await asyncio.sleep(max(0.0, start + i * CHUNK_S - time.monotonic()))
        offset = sent % audio.size
        yield audio[offset:offset + min(step, total - sent)]


class Windows:
    """Per-window frame statistics of every session (fed by the client's frame callback)."""

    def __init__(self) -> None:
        self.latency: list[float] = []
        self.frames = 0
        self._seen: dict[int, int] = {}  # session -> frames already counted

    def take(self, key: int, result: Any) -> None:
        done = self._seen.get(key, 0)
        new = result.server_latency_ms[done:]
        self.latency.extend(new)
        self.frames += len(new)
        self._seen[key] = done + len(new)

    def drain(self) -> tuple[list[float], int]:
        latency, frames = self.latency, self.frames
        self.latency, self.frames = [], 0
        return latency, frames


async def soak(args: argparse.Namespace, server: Server, audios: list[np.ndarray],
               ) -> dict[str, Any]:
    from realtime.client import StreamOptions, stream_audio

    seconds = args.minutes * 60.0
    windows = Windows()
    options = StreamOptions(format="coeffs", keep_vertices=False)

    async def one(i: int) -> Any:
        await asyncio.sleep(i * 0.1 / max(1, len(audios)))
        return await stream_audio(server.url, looped_chunks(audios[i], seconds), SAMPLE_RATE,
                                  options, lambda result: windows.take(i, result))

    last = (time.monotonic(), read_tree(server.proc.pid)["cpu_s"])
    tasks = [asyncio.create_task(one(i)) for i in range(len(audios))]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    print(format_table(SAMPLE_HEADERS, [], 9), flush=True)
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=args.sample_s)
        latency, frames = windows.drain()
        now, tree = time.monotonic(), read_tree(server.proc.pid)  # the server and its children
        cpu_percent = 100.0 * (tree["cpu_s"] - last[1]) / max(now - last[0], 1e-9)
        last = (now, tree["cpu_s"])
        sample = {"t_min": round((now - started) / 60, 3),
                  "rss_mb": round(tree["rss"] / 2**20, 2),
                  "threads": int(tree["threads"]), "fds": int(tree["fds"]),
                  "cpu_percent": round(cpu_percent, 1), "frames": frames,
                  "latency_ms": percentiles(latency)}
        samples.append(sample)
        print(format_table(SAMPLE_HEADERS, [sample_row(sample)], 9).splitlines()[-1], flush=True)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    expected = math.ceil(round(seconds * SAMPLE_RATE) * FPS / SAMPLE_RATE)
    return {"samples": samples, "errors": errors, "summary": summarise(samples, ok, expected,
                                                                       len(audios))}


SAMPLE_HEADERS = ("minute", "RSS MB", "threads", "fds", "CPU %", "frames", "p50 ms", "p95 ms")


def sample_row(s: dict[str, Any]) -> list[Any]:
    return [s["t_min"], s["rss_mb"], s["threads"], s["fds"], s["cpu_percent"], s["frames"],
            s["latency_ms"]["p50"], s["latency_ms"]["p95"]]


def summarise(samples: list[dict[str, Any]], results: list[Any], expected: int,
              sessions: int) -> dict[str, Any]:
    """Memory slope after the first minute, p95 (median of the windows' p95) of the first vs the
    last fifth and of the first vs the last 5 minutes, frame totals."""
    late = [s for s in samples if s["t_min"] >= 1.0] or samples
    t = np.array([s["t_min"] for s in late])
    rss = np.array([s["rss_mb"] for s in late])
    slope = float(np.polyfit(t, rss, 1)[0]) if len(late) >= 2 else None
    fifth = max(1, len(samples) // 5)

    def p95(part: list[dict[str, Any]]) -> float | None:
        values = [s["latency_ms"]["p95"] for s in part if s["latency_ms"]["p95"] is not None]
        return round(float(np.median(values)), 1) if values else None

    first, last = p95(samples[:fifth]), p95(samples[-fifth:])
    end = samples[-1]["t_min"] if samples else 0.0
    first5 = p95([s for s in samples if s["t_min"] <= 5.0])
    last5 = p95([s for s in samples if s["t_min"] > end - 5.0])
    return {
        "sessions": sessions,
        "frames": {"delivered": sum(r.frames for r in results), "expected": expected * sessions,
                   "gaps": sum(r.gaps for r in results)},
        "rss_mb": {"first": samples[0]["rss_mb"] if samples else None,
                   "last": samples[-1]["rss_mb"] if samples else None,
                   "slope_mb_per_min": None if slope is None else round(slope, 3)},
        "threads_max": max((s["threads"] for s in samples), default=None),
        "fds": {"first": samples[0]["fds"] if samples else None,
                "last": samples[-1]["fds"] if samples else None},
        "p95_ms": {"first_fifth": first, "last_fifth": last,
                   "ratio": round(last / first, 3) if first and last else None,
                   "first_5_min": first5, "last_5_min": last5,
                   "ratio_5_min": round(last5 / first5, 3) if first5 and last5 else None},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--checkpoint", help="model (default: the shipped model)")
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    if args.quick:
        args.sessions, args.minutes, args.sample_s = 2, 0.5, 5.0
    if args.sessions < 1 or args.minutes <= 0 or args.sample_s <= 0:
        raise ConfigError("--sessions, --minutes and --sample-s must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    seed_everything(args.seed)
    threads = setup_torch(args.device, args.threads or 1)
    info = machine_info(args.device, threads)
    print_machine(info)
    out = Path(args.out) if args.out else default_out("soak", args.quick)
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp:
        workdir = Path(tmp)
        if args.quick:
            ckpt = tiny_checkpoint(workdir, args.seed)
        else:
            ckpt = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
            if not ckpt.is_file():
                raise ConfigError(f"no checkpoint {ckpt}")
        audios = [espeak_utterance(12.0, VOICES[i % len(VOICES)], i, workdir / "wav", args.seed)
                  for i in range(args.sessions)]
        server = start_server(["--checkpoint", str(ckpt)], ["--device", args.device],
                              args.sessions + 4, args.seed, workdir, args.startup_timeout)
        try:
            print(f"{args.sessions} sessions for {args.minutes:g} min against pid "
                  f"{server.proc.pid}", flush=True)
            run = asyncio.run(soak(args, server, audios))
        finally:
            server.stop()
    results = {"benchmark": "soak", "quick": bool(args.quick), "machine": info,
               "model": str(ckpt), "config": {"sessions": args.sessions,
                                               "minutes": args.minutes,
                                               "sample_s": args.sample_s, "seed": args.seed},
               **run, "wall_s": round(time.monotonic() - began, 1)}
    write_json(out, results)
    summary = run["summary"]
    print(f"frames {summary['frames']}, RSS {summary['rss_mb']}, fds {summary['fds']}, "
          f"p95 {summary['p95_ms']}, errors {len(run['errors'])}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
