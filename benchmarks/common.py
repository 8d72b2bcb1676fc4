"""Shared pieces of the benchmark scripts: what a run ran on (CPU, cores, torch, commit), torch
threads and device, fixed seeds, espeak-ng speech, percentiles, the printed table and the JSON.

Percentiles use ``realtime.metrics.percentile`` (linear interpolation), the same definition as
the server's ``stats`` messages, so the two agree.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ConfigError
from realtime.metrics import percentile

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SAMPLE_RATE = 16000
FPS = 30

# Several espeak-ng voices (base voice + variant): sessions of one ladder step differ in voice.
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-gb-x-rp+m3", "en-029+f2")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have a moment.",
    "We measured the latency of every single frame.",
    "Open the window, it is rather warm in here.",
    "How many streams can two small cores carry?",
    "Thank you, and see you again tomorrow morning.",
)




# ------------------------------------------------------------------------------ what it ran on
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> dict[str, Any]:
    """HEAD and whether the tree differs from it; read-only (no index refresh is written)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                 check=True, env=env, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "torch_threads": threads,
        **git_commit(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_machine(info: dict[str, Any]) -> None:
    commit = str(info["commit"])[:12] + ("+dirty" if info.get("dirty") else "")
    print(f"machine: {info['cpu']}, {info['cores']} cores (load {info['load_avg_1m']}); "
          f"torch {info['torch']}, device {info['device']}"
          + (f" ({info['gpu']})" if info.get("gpu") else "")
          + f", torch threads {info['torch_threads']}; commit {commit}; {info['date']}",
          flush=True)


def setup_torch(device: str, threads: int | None) -> int:
    """Check the device and set torch's intra-op threads explicitly (default: every core).
    Returns the thread count; prints it."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda asked, but this torch ({torch.__version__}) sees no "
                         "CUDA device; the Makefile installs the CPU build")
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    print(f"torch threads: {torch.get_num_threads()} (device {device})", flush=True)
    return n


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast run (tiny model, few steps) that checks the script")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads of this process (default: all cores; "
                             "quick: 1, since spare cores are what a loaded machine lacks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON path (a PNG plot goes next to it); default under "
                                      "benchmarks/results/")


def run_main(main: Any) -> None:
    """``raise SystemExit(run_main(main))`` with ConfigError as one line and exit code 2."""
    try:
        code = main()
    except ConfigError as exc:
        print(f"benchmark error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


# ---------------------------------------------------------------------------------- numbers
def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 (linear interpolation) rounded to 0.01; None when there are no values."""
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": round(percentile(values, q), 2) for q in (50, 95, 99)}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 min_width: int = 0) -> str:
    """Right-aligned columns; ``min_width`` keeps rows printed one by one aligned."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(min_width, len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


def default_out(name: str, quick: bool) -> Path:
    return RESULTS / f"{name}{'_quick' if quick else ''}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


# ------------------------------------------------------------------------------------ speech
def espeak_utterance(seconds: float, voice: str, index: int, folder: Path,
                     seed: int = 0) -> np.ndarray:
    """About ``seconds`` of espeak-ng speech in ``voice`` at 16 kHz float32, exactly
    round(seconds * 16000) samples: sentences (starting at ``index``) separated by pauses of
    0.3-0.8 s (seeded), cut at the end. WAVs are cached in ``folder``."""
    from models.audio import read_wav, resample

    if shutil.which("espeak-ng") is None:
        raise ConfigError("espeak-ng is not installed (apt-get install espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, index])
    need = int(round(seconds * SAMPLE_RATE))
    parts: list[np.ndarray] = []
    total, k = 0, index
    while total < need:
        text = SENTENCES[k % len(SENTENCES)]
        wav = folder / f"{re.sub(r'[^A-Za-z0-9]+', '_', voice)}_{k % len(SENTENCES)}.wav"
        if not wav.is_file():
            proc = subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not wav.is_file():
                raise ConfigError(f"espeak-ng -v {voice} failed: {proc.stderr.strip()}")
        data, rate = read_wav(wav)
        audio = resample(data, rate, SAMPLE_RATE)
        pause = np.zeros(int(rng.uniform(0.3, 0.8) * SAMPLE_RATE), np.float32)
        parts += [audio, pause]
        total += audio.size + pause.size
        k += 1
    return np.concatenate(parts)[:need].astype(np.float32)


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Save the tiny random Talker (models.net.random_model.TINY, seeded) and return its path."""
    from models.net.random_model import TINY, random_talker

    path = folder / "tiny_random.safetensors"
    random_talker(TINY, seed=seed).save(path)
    return path


def parse_ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers (a stream ladder, batch sizes, step counts)."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2,4: {text}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text}")
    return values
