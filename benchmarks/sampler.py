"""What distillation buys: time to generate a 1-s window (30 frames) vs batch size, next to LVE.

Rows: the teacher with all its training steps (ancestral DDPM, 500), the teacher under plain DDIM
(64/32/16/8 steps), and the distilled student at its own steps (plus student_4 / student_2 from
the same folder when those checkpoints exist). Every row is timed the same way: B streams
(``Talker.new_stream`` with B seeds), each given 1 s of espeak-ng speech and flushed, then one
``Talker.stream_step(states, 30)`` call, which runs the audio encoder and every sampling step for
all B streams in one batched pass (what the server's inference worker does for a 1-s hop). One
warm-up call, then ``--repeats`` timed calls (each on fresh streams), p50/p95/p99 in ms. Quality is
LVE / FDD / MVE of ``Talker.generate`` on the corpus's ``test`` split
(``models.training.train.evaluate_talker``, own identity), ``--max-utterances`` of them.
Writes JSON and
a PNG plot, prints a table.

    python -m benchmarks.sampler                       # runs/default teacher and the default model
    python -m benchmarks.sampler --quick               # ~15 s: tiny random model, batch 1 and 8
    python -m benchmarks.sampler --teacher T.safetensors --student S.safetensors --data CORPUS
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    write_json,
)
from models.errors import ConfigError

DEFAULT_TEACHER = REPO / "runs" / "default" / "teacher" / "talker.safetensors"
DEFAULT_STUDENT = REPO / "models" / "weights" / "default.safetensors"
DEFAULT_STUDENT_DIR = REPO / "runs" / "default" / "student"
DEFAULT_BASELINE = REPO / "runs" / "default" / "regression" / "talker.safetensors"
DEFAULT_DATA = REPO / "runs" / "default" / "corpus"
WINDOW_FRAMES = FPS  # a 1-s window


@dataclass(frozen=True)
class Row:
    label: str
    role: str  # "teacher", "student", "baseline" (regression, no diffusion) or "random"
    checkpoint: str | None
    sampler: str
    steps: int


# ---------------------------------------------------------------------------------- models
def load(path: str | None, device: str, cache: dict[str | None, Any], tiny_seed: int) -> Any:
    """A Talker from a checkpoint (None: the tiny random model), moved to ``device``; cached."""
    if path not in cache:
        if path is None:
            from models.net.random_model import TINY, random_talker

            model = random_talker(TINY, seed=tiny_seed)
        else:
            from models.net.talker import Talker

            model = Talker.from_checkpoint(Path(path))
        cache[path] = model.to(device).eval()
    return cache[path]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def student_paths(given: list[str]) -> list[Path]:
    """The students asked for, plus ``student_N`` checkpoints beside them with fewer steps (the
    4- and 2-step rounds); the same file reached twice (default.safetensors is a copy) once."""
    paths = [Path(p) for p in given]
    for p in list(paths):
        own = re.fullmatch(r"student_(\d+)\.safetensors", p.name)
        folders = [p.parent] if own else [DEFAULT_STUDENT_DIR]
        limit = int(own.group(1)) if own else None
        for folder in folders:
            for sib in sorted(folder.glob("student_*.safetensors")):
                n = re.fullmatch(r"student_(\d+)\.safetensors", sib.name)
                if n and (limit is None or int(n.group(1)) < limit) and int(n.group(1)) <= 4:
                    paths.append(sib)
    seen: set[str] = set()
    out = []
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"no student checkpoint {p}")
        d = _digest(p)
        if d not in seen:
            seen.add(d)
            out.append(p)
    return out


def plan_rows(args: argparse.Namespace, device: str, cache: dict[str | None, Any]) -> list[Row]:
    teacher = args.teacher
    students = list(args.student or [])
    if not args.quick and not args.tiny:
        if teacher is None and DEFAULT_TEACHER.is_file():
            teacher = str(DEFAULT_TEACHER)
        if not students:
            if DEFAULT_STUDENT.is_file():
                students = [str(DEFAULT_STUDENT)]
            elif (DEFAULT_STUDENT_DIR / "student_8.safetensors").is_file():
                students = [str(DEFAULT_STUDENT_DIR / "student_8.safetensors")]
    rows: list[Row] = []
    if args.tiny or (teacher is None and not students):
        if not (args.quick or args.tiny):
            raise ConfigError(f"no checkpoints: pass --teacher/--student (defaults "
                             f"{DEFAULT_TEACHER.relative_to(REPO)}, "
                             f"{DEFAULT_STUDENT.relative_to(REPO)}), or --tiny / --quick")
        roles: list[tuple[str, str | None]] = [("random", None)]
    else:
        roles = [("teacher", teacher)] if teacher else []
        if teacher and not Path(teacher).is_file():
            raise ConfigError(f"no teacher checkpoint {teacher}")
    for role, path in roles:
        model = load(path, device, cache, args.seed)
        name = "random-tiny" if role == "random" else "teacher"
        if not args.no_ddpm:
            n = model.config.schedule.n_train_steps
            rows.append(Row(f"{name} ddpm{n}", role, path, "ddpm", n))
        rows += [Row(f"{name} ddim{s}", role, path, "ddim", s) for s in args.ddim]
    if not args.tiny:
        for p in student_paths(students):
            model = load(str(p), device, cache, args.seed)
            c = model.config
            rows.append(Row(f"student {c.sampler}{c.sampler_steps}", "student", str(p),
                            c.sampler, c.sampler_steps))
    baseline = args.baseline
    if baseline is None and not (args.quick or args.tiny) and DEFAULT_BASELINE.is_file():
        baseline = str(DEFAULT_BASELINE)
    if baseline and not args.tiny:
        if not Path(baseline).is_file():
            raise ConfigError(f"no baseline checkpoint {baseline}")
        if not load(baseline, device, cache, args.seed).is_regression:
            raise ConfigError(f"{baseline} is not a regression checkpoint "
                             "(talker train --objective regression)")
        rows.append(Row("regression (no diffusion)", "baseline", baseline, "ddim", 1))
    return rows


# ---------------------------------------------------------------------------------- timing
def time_windows(model: Any, row: Row, batch: int, audio: list[np.ndarray], repeats: int,
                 budget_s: float, device: str, seed: int) -> dict[str, Any]:
    """ms for one stream_step of ``batch`` fresh streams over a 1-s window (30 frames)."""
    import torch

    def fresh() -> list[Any]:
        states = [model.new_stream(seed * 1000 + i, row.steps, row.sampler)
                  for i in range(batch)]
        for i, s in enumerate(states):
            model.push_audio(s, audio[i % len(audio)])
            model.flush(s)
        return states

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    model.stream_step(fresh(), WINDOW_FRAMES)  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats:
        states = fresh()
        sync()
        t0 = time.perf_counter()
        model.stream_step(states, WINDOW_FRAMES)
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
        if time.perf_counter() - started > budget_s:
            break
    p = percentiles(times)
    p50 = float(p["p50"] or 0.0)
    return {**p, "repeats": len(times), "ms_per_stream_s": round(p50 / batch, 3),
            "streams_realtime": int(1000.0 * batch / p50) if p50 > 0 else None}


def quality(model: Any, row: Row, clips: list[Any], seed: int) -> dict[str, Any]:
    from models.training.train import evaluate_talker

    m = evaluate_talker(model, clips, row.steps, seed, sampler=row.sampler)
    return {"lve": m["lve"], "fdd": m["fdd"], "mve": m["mve"], "n_utterances": len(clips),
            "split": "test"}


def test_clips(data: Path | None, quick: bool, workdir: Path, max_utterances: int,
               seed: int) -> tuple[list[Any], str]:
    """The corpus's test utterances; in quick mode without --data, a tiny corpus made now."""
    from models.data.dataset import TalkingFaceDataset
    from models.data.windows import load_clips

    if data is None:
        if not quick:
            if not DEFAULT_DATA.is_dir():
                raise ConfigError(f"no corpus {DEFAULT_DATA.relative_to(REPO)}: pass --data or "
                                 "--no-quality")
            data = DEFAULT_DATA
        else:
            from models.corpus.generator import CorpusConfig, generate_corpus

            data = workdir / "corpus"
            config = CorpusConfig(talkers=2, utterances=3, seed=seed, heldout_talkers=0,
                                  heldout_voices=0, heldout_voice_utterances=0,
                                  val_fraction=0.0, test_fraction=0.34)
            generate_corpus(config, data, workers=1, progress=False)
    if not data.is_dir():
        raise ConfigError(f"no corpus folder {data}")
    clips = load_clips(TalkingFaceDataset.load(data), "test")[:max_utterances]
    if not clips:
        raise ConfigError(f"corpus {data} has no test utterances")
    return clips, str(data)


# ------------------------------------------------------------------------------------ plot
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    fig, (ax, axq) = plt.subplots(1, 2, figsize=(12, 4.5))
    batches = results["config"]["batch"]
    for row in results["rows"]:
        ax.plot(batches, [row["timing"][str(b)]["p50"] for b in batches], "o-",
                label=row["label"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.axhline(1000, color="grey", linestyle=":", linewidth=1)
    ax.annotate("1 s: real time for the whole batch", (batches[0], 1000), fontsize=8,
                color="grey", va="top")
    ax.set_xlabel("batch (streams)")
    ax.set_ylabel("ms per 1-s window (p50)")
    ax.set_title("Sampling time vs batch")
    ax.legend(fontsize=7)
    b = str(batches[-1])
    with_q = [r for r in results["rows"] if r.get("quality")]
    for row in with_q:
        x, y = row["timing"][b]["ms_per_stream_s"], row["quality"]["lve"]
        axq.scatter([x], [y])
        axq.annotate(row["label"], (x, y), fontsize=8, xytext=(4, 4),
                     textcoords="offset points")
    axq.set_xscale("log")
    axq.set_xlabel(f"ms of compute per stream-second (batch {b})")
    axq.set_ylabel("LVE on test (lower is better)")
    axq.set_title("Speed vs quality")
    m = results["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} threads | torch "
                 f"{m['torch']} | {m['device']} | {str(m['commit'])[:10]}"
                 + (" | QUICK, tiny random model" if results["quick"] and
                    any(r["role"] == "random" for r in results["rows"]) else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--teacher", help=f"teacher checkpoint (default "
                                     f"{DEFAULT_TEACHER.relative_to(REPO)} when present)")
    p.add_argument("--student", action="append",
                   help=f"student checkpoint, repeatable (default "
                        f"{DEFAULT_STUDENT.relative_to(REPO)}, else "
                        f"{DEFAULT_STUDENT_DIR.relative_to(REPO)}/student_8.safetensors)")
    p.add_argument("--baseline", help=f"regression checkpoint (default "
                                      f"{DEFAULT_BASELINE.relative_to(REPO)} when present)")
    p.add_argument("--tiny", action="store_true",
                   help="only the tiny random model (what --quick uses without checkpoints)")
    p.add_argument("--data", help=f"corpus for LVE (default {DEFAULT_DATA.relative_to(REPO)}; "
                                  "quick: a tiny corpus made on the spot)")
    p.add_argument("--no-quality", action="store_true", help="timing only, no LVE")
    p.add_argument("--batch", type=parse_ints, help="batch sizes (default 1,8,32; quick 1,8)")
    p.add_argument("--ddim", type=parse_ints,
                   help="teacher DDIM steps (default 64,32,16,8; quick 8,4)")
    p.add_argument("--no-ddpm", action="store_true", help="leave out the all-steps teacher row")
    p.add_argument("--repeats", type=int, help="timed calls per cell (default 10; quick 3)")
    p.add_argument("--cell-budget-s", type=float,
                   help="stop repeating a cell after this long (default 30; quick 3)")
    p.add_argument("--max-utterances", type=int, help="test utterances for LVE (default 20; "
                                                      "quick 2)")
    args = p.parse_args(argv)
    q = args.quick
    args.batch = args.batch or ((1, 8) if q else (1, 8, 32))
    args.ddim = args.ddim or ((8, 4) if q else (64, 32, 16, 8))
    args.repeats = args.repeats or (3 if q else 10)
    args.cell_budget_s = args.cell_budget_s or (3.0 if q else 30.0)
    args.max_utterances = args.max_utterances or (2 if q else 20)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    seed_everything(args.seed)
    threads = setup_torch(args.device, args.threads or (1 if args.quick else None))
    info = machine_info(args.device, threads)
    print_machine(info)
    out = Path(args.out) if args.out else default_out("sampler", args.quick)
    cache: dict[str | None, Any] = {}
    rows = plan_rows(args, args.device, cache)
    print(f"rows: {', '.join(r.label for r in rows)}; batches {list(args.batch)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_sampler_") as tmp:
        workdir = Path(tmp)
        audio = [espeak_utterance(1.0, VOICES[i % len(VOICES)], i, workdir / "wav", args.seed)
                 for i in range(min(max(args.batch), len(VOICES)))]
        assert all(a.size == SAMPLE_RATE for a in audio)
        clips, data = ([], None) if args.no_quality else test_clips(
            Path(args.data) if args.data else None, args.quick, workdir, args.max_utterances,
            args.seed)
    results_rows: list[dict[str, Any]] = []
    for row in rows:
        model = load(row.checkpoint, args.device, cache, args.seed)
        try:
            timing = {str(b): time_windows(model, row, b, audio, args.repeats, args.cell_budget_s,
                                           args.device, args.seed) for b in args.batch}
            q = quality(model, row, clips, args.seed) if clips else None
        except RuntimeError as exc:
            if args.device == "cuda":
                raise ConfigError(f"{row.label} failed on CUDA ({exc}); the streaming path of "
                                 "models.net.talker builds its noise and state on the CPU") from exc
            raise
        entry = {"label": row.label, "role": row.role, "checkpoint": row.checkpoint,
                 "sampler": row.sampler, "steps": row.steps, "timing": timing, "quality": q}
        results_rows.append(entry)
        cells = ", ".join(f"B{b} {t['p50']} ms" for b, t in timing.items())
        print(f"  {row.label}: {cells}" + (f"; LVE {q['lve']:.4g}" if q else ""), flush=True)
    reference = next((r for r in results_rows if r["sampler"] == "ddpm" and r["quality"]), None)
    for r in results_rows:
        if reference and r["quality"]:
            r["lve_vs_all_steps"] = round(r["quality"]["lve"] / reference["quality"]["lve"], 4)
    results: dict[str, Any] = {
        "benchmark": "sampler",
        "quick": bool(args.quick),
        "machine": info,
        "config": {"batch": list(args.batch), "ddim": list(args.ddim), "repeats": args.repeats,
                   "cell_budget_s": args.cell_budget_s, "window_frames": WINDOW_FRAMES,
                   "max_utterances": args.max_utterances, "data": data, "seed": args.seed},
        "rows": results_rows,
        "wall_s": round(time.monotonic() - started, 1),
    }
    write_json(out, results)
    png = out.with_suffix(".png")
    plot(results, png)
    big = str(args.batch[-1])
    headers = ["row", "steps", *(f"B{b} p50 ms" for b in args.batch), f"B{big} p95 ms",
               f"ms/stream-s B{big}", f"RT streams B{big}", "LVE", "LVE/all-steps"]
    table = [[r["label"], r["steps"], *(r["timing"][str(b)]["p50"] for b in args.batch),
              r["timing"][big]["p95"], r["timing"][big]["ms_per_stream_s"],
              r["timing"][big]["streams_realtime"],
              r["quality"]["lve"] if r["quality"] else None,
              f"{r['lve_vs_all_steps']:.3f}" if "lve_vs_all_steps" in r else None]
             for r in results_rows]
    print()
    print(format_table(headers, table))
    print("ms: one stream_step over a 1-s window (30 frames) for the whole batch; RT streams: "
          "streams this sampler alone could keep in real time")
    print(f"results: {out}  plot: {png}  ({results['wall_s']} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
