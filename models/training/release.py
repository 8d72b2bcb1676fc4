"""``make train-default``: reproduce the shipped default model from nothing but this repo.

corpus (seed) -> teacher and regression baseline (trained side by side, one thread each: the
2-core machine) -> 8-step student (progressive distillation) -> eval ->
``models/weights/default.safetensors`` + ``models/weights/default.json`` (the manifest: every
command, seed, commit, timing and metric). Each stage is skipped when its output exists, so an
interrupted run resumes.

    python -m models.training.release [--work runs/default] [--seed 0] [--voices N]
        [--heldout-synth 8] [--train-flite N] [--audio-dropout P] [--gap-loss W]
        [--lookahead-frames N] [--augment-colour P] [--guidance G] [--gt-weight W]

The knobs are the recipe (models/README.md, "Lips that articulate"); unset ones leave the talker
command's default, and the manifest records each stage's exact command.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "models" / "weights"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _talker(*commands: tuple[str, ...]) -> list[float]:
    """Run ``talker`` subcommands side by side in this interpreter; returns each one's wall time
    in seconds. Fails (after all have ended) if any of them failed."""
    start = time.monotonic()
    procs = []
    for args in commands:
        print("+ talker " + " ".join(args), flush=True)
        procs.append(subprocess.Popen([sys.executable, "-m", "talker", *args], cwd=REPO))
    seconds: list[float] = [0.0] * len(procs)
    running = set(range(len(procs)))
    while running:  # poll, so that each stage's own end time is recorded
        for i in sorted(running):
            if procs[i].poll() is not None:
                seconds[i] = round(time.monotonic() - start, 1)
                running.discard(i)
        time.sleep(0.2)
    failed = [f"talker {' '.join(args)} (exit {proc.returncode})"
              for args, proc in zip(commands, procs, strict=True) if proc.returncode != 0]
    if failed:
        raise SystemExit("failed: " + "; ".join(failed))
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/default", help="folder for corpus and runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--talkers", type=int, default=16)
    parser.add_argument("--utterances", type=int, default=120)
    parser.add_argument("--preset", default="default", choices=("default", "full", "tiny"))
    parser.add_argument("--student-steps", type=int, default=8)
    # The recipe's knobs (models/README.md, "Lips that articulate"): each one a talker option.
    parser.add_argument("--voices", type=int, help="talker corpus --voices")
    parser.add_argument("--heldout-synth", type=int, default=8,
                        help="talker corpus --heldout-synth")
    parser.add_argument("--train-flite", type=int, default=0,
                        help="talker corpus --train-flite")
    parser.add_argument("--audio-dropout", type=float, help="talker train --audio-dropout")
    parser.add_argument("--gap-loss", type=float, help="talker train --gap-loss")
    parser.add_argument("--lookahead-frames", type=int, help="talker train --lookahead-frames")
    parser.add_argument("--augment-colour", type=float, help="talker train --augment-colour "
                        "(teacher and baseline: the data they hear)")
    parser.add_argument("--guidance", type=float, help="talker distill --guidance")
    parser.add_argument("--gt-weight", type=float, help="talker distill --gt-weight")
    parser.add_argument("--out", default=str(WEIGHTS), help="where the shipped files go (the "
                        "results table goes into models/README.md only for the shipped folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    work = (REPO / args.work).resolve()
    corpus, teacher_dir, student_dir = work / "corpus", work / "teacher", work / "student"
    seed = str(args.seed)
    commands: list[dict[str, Any]] = []

    def stages(*todo: tuple[str, Path, tuple[str, ...]]) -> None:
        """Run (name, output, command) stages side by side; a stage whose output exists is
        skipped."""
        pending: list[tuple[dict[str, Any], tuple[str, ...]]] = []
        for name, done, cmd in todo:
            entry: dict[str, Any] = {"stage": name, "command": "talker " + " ".join(cmd)}
            if done.exists():
                entry["skipped"] = f"{done} exists"
            else:
                pending.append((entry, cmd))
            commands.append(entry)
        for (entry, _), seconds in zip(pending, _talker(*(cmd for _, cmd in pending)),
                                       strict=True):
            entry["seconds"] = seconds

    def stage(name: str, done: Path, *cmd: str) -> None:
        stages((name, done, cmd))

    def given(**options: Any) -> tuple[str, ...]:
        """``--flag value`` for each option that was set."""
        return tuple(x for k, v in options.items() if v is not None
                     for x in (f"--{k.replace('_', '-')}", str(v)))

    stage("corpus", corpus / "corpus.json", "corpus", "--out", str(corpus), "--talkers",
          str(args.talkers), "--utterances", str(args.utterances), "--seed", seed, "--quiet",
          *given(voices=args.voices, heldout_synth=args.heldout_synth or None,
                 train_flite=args.train_flite or None))
    baseline_dir = work / "regression"
    train = ("train", "--data", str(corpus), "--preset", args.preset, "--seed", seed,
             "--threads", "1", "--quiet", *given(lookahead_frames=args.lookahead_frames,
                                                 augment_colour=args.augment_colour))
    recipe = given(audio_dropout=args.audio_dropout, gap_loss=args.gap_loss)
    stages(("train", teacher_dir / "talker.safetensors",
            (*train, *recipe, "--out", str(teacher_dir))),
           ("baseline", baseline_dir / "talker.safetensors",
            (*train, "--out", str(baseline_dir), "--objective", "regression")))
    n = str(args.student_steps)
    student = student_dir / f"student_{n}.safetensors"
    stage("distill", student, "distill", "--teacher", str(teacher_dir / "talker.safetensors"),
          "--data", str(corpus), "--out", str(student_dir), "--steps", n, "--preset",
          args.preset, "--seed", seed, "--threads", "2", "--quiet",
          *given(guidance=args.guidance, gt_weight=args.gt_weight))
    eval_json = work / "eval.json"
    stage("eval", eval_json, "eval", "--checkpoint", str(student), "--teacher",
          str(teacher_dir / "talker.safetensors"), "--baseline",
          str(baseline_dir / "talker.safetensors"), "--steps", "64", "--steps", n, "--data",
          str(corpus), "--json", str(eval_json), *given(guidance=args.guidance))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads(eval_json.read_text())
    choice = _ship_best(results, student, teacher_dir / "talker.safetensors", int(n),
                        out / "default.safetensors", args.guidance)
    corpus_meta = json.loads((corpus / "corpus.json").read_text())
    manifest = {
        "model": "default.safetensors",
        "what": choice,
        "made_by": "make train-default (python -m models.training.release)",
        "seed": args.seed,
        "preset": args.preset,
        "commit": _git_commit(),
        "corpus": {"talkers": args.talkers, "utterances_per_talker": args.utterances,
                   "seed": args.seed, "voices": args.voices,
                   "heldout_synth_utterances": args.heldout_synth,
                   "train_synth_utterances": args.train_flite,
                   "generator_version": corpus_meta.get("generator_version"),
                   "rig": corpus_meta.get("rig")},
        "commands": commands,
        "metrics": results.get("summary"),
        "bytes": (out / "default.safetensors").stat().st_size,
    }
    (out / "default.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out.resolve() == WEIGHTS.resolve():
        _write_results_table(results, manifest)
    print(f"shipped {out / 'default.safetensors'} ({manifest['bytes'] / 1e6:.1f} MB)")
    return 0


def _ship_best(results: dict[str, Any], student: Path, teacher: Path, steps: int,
               dest: Path, guidance: float | None = None) -> str:
    """Ship the better of two samplers: the distilled student, or the teacher itself on a plain
    ``steps``-step DDIM grid (same network; with ``guidance`` the teacher at that scale, which
    costs a doubled batch). Judged by LVE on the test utterances of the training talkers."""
    from models.net.talker import Talker
    from models.training.distill import with_steps

    rows = results["rows"]
    key = f"teacher_ddim{steps}" + (f"_g{guidance:g}" if guidance not in (None, 1.0) else "")
    mine, theirs = rows[f"checkpoint_ddim{steps}"], rows[key]
    split = "test" if "test" in mine else next(iter(mine))  # a tiny corpus may have no test
    student_lve, teacher_lve = mine[split]["lve"], theirs[split]["lve"]
    if student_lve <= teacher_lve:
        shutil.copyfile(student, dest)
        return (f"DiffusionTalker student distilled to {steps} DDIM steps "
                f"({split} LVE {student_lve:.3e} vs teacher DDIM-{steps} {teacher_lve:.3e})")
    with_steps(Talker.from_checkpoint(teacher), steps, guidance).save(
        dest, {"source": str(teacher), "sampler": f"ddim{steps}"})
    return (f"DiffusionTalker teacher sampled with {steps} DDIM steps: it beat the distilled "
            f"student on {split} LVE ({teacher_lve:.3e} vs {student_lve:.3e}); "
            "see models/README.md")


def _write_results_table(results: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Replace the results section of models/README.md with this run's table."""
    from models.training.evaluate import markdown_table

    readme = REPO / "models" / "README.md"
    text = readme.read_text()
    head, marker, _ = text.partition("## Results")
    if not marker:
        return
    body = (f"## Results\n\nFrom `make train-default` at commit {manifest['commit'][:10]} "
            f"(seed {manifest['seed']}, preset {manifest['preset']}); `weights/default.json` has "
            f"the commands and timings.\n\n{markdown_table(results)}\n")
    readme.write_text(head + body)


if __name__ == "__main__":
    raise SystemExit(main())
