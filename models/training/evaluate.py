"""``talker eval``: the results table of DESIGN §10 / the model issue, as one JSON document.

For a checkpoint (usually the distilled student) and optionally its teacher, on the corpus's
``test`` utterances (training talkers) and ``heldout_talker`` utterances (unseen talkers):
- LVE / FDD / MVE of the checkpoint at its own steps, of the teacher at all its training steps
  (DDPM, the many-step reference), of the teacher under plain DDIM at each step count asked, and
  of a deterministic regression baseline (same network, no diffusion) when one is given;
- personalisation: LVE with the true identity, the mean identity and a wrong one (the next
  training talker in bank order);
- diversity of each row: mean per-vertex distance between samples of the same audio and identity
  drawn with different seeds (what a sampler adds over the deterministic regression: 0 there);
- identity picked from the first 3 s of audio: top-1 accuracy over test utterances;
- CPU time to generate one 1-s window with each sampler, one thread, after a warm-up.
Every metric block names the vertex masks it used.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.windows import Clip, load_clips
from models.errors import ModelError
from models.net.talker import Talker
from models.training.metrics import diversity
from models.training.train import evaluate_talker


@dataclass(frozen=True)
class EvalConfig:
    max_utterances: int = 40  # per split: the table is about trends, generation is not free
    steps: tuple[int, ...] = ()  # teacher DDIM step counts; () = (the checkpoint's steps,)
    teacher: str | None = None  # teacher checkpoint for the all-steps and DDIM rows
    baseline: str | None = None  # regression checkpoint (``talker train --objective regression``)
    seed: int = 0
    timing_repeats: int = 10
    diversity_utterances: int = 8  # test utterances, each sampled with ``diversity_seeds``
    diversity_seeds: int = 3


def identity_accuracy(talker: Talker, clips: list[Clip]) -> dict[str, Any]:
    known = [c for c in clips if c.talker in talker.identities]
    contract = talker.contract
    heard = round(contract.identity_pick_s * contract.sample_rate_hz)
    hits = 0
    for clip in known:
        index, _ = talker.pick_identity(clip.audio[:heard])
        hits += talker.identities[int(index)] == clip.talker
    return {"top1": hits / len(known) if known else None, "n": len(known),
            "seconds": contract.identity_pick_s, "chance": 1 / max(1, len(talker.identities))}


def sample_diversity(talker: Talker, clips: list[Clip], steps: int | None, sampler: str | None,
                     config: EvalConfig) -> float:
    """Mean over utterances of ``metrics.diversity`` between seeds (own identity), in metres."""
    values = []
    for clip in clips[: config.diversity_utterances]:
        ident = clip.talker if clip.talker in talker.identities else None
        samples = [talker.basis.decode(talker.generate(clip.audio, ident, steps=steps,
                                                       seed=config.seed + k, sampler=sampler),
                                       clip.template)
                   for k in range(config.diversity_seeds)]
        values.append(diversity(samples))
    return float(np.mean(values)) if values else 0.0


def window_time_ms(talker: Talker, steps: int | None, sampler: str | None,
                   repeats: int) -> dict[str, float]:
    """Generate one 1-s window (30 frames) on one thread: p50/p95 milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
        talker.generate(audio, None, steps=steps, sampler=sampler)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            talker.generate(audio, None, steps=steps, sampler=sampler)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    times.sort()
    return {"p50": round(statistics.median(times), 2),
            "p95": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2)}


def evaluate_checkpoint(path: Path, dataset: Any, config: EvalConfig = EvalConfig(),
                        ) -> dict[str, Any]:
    model = Talker.from_checkpoint(path)
    baseline = Talker.from_checkpoint(Path(config.baseline)) if config.baseline else None
    if baseline is not None and not baseline.is_regression:  # fail before the long work
        raise ModelError(f"{config.baseline} is not a regression checkpoint "
                         "(train it with --objective regression)")
    ids = tuple(model.identities)
    splits = {name: load_clips(dataset, name, ids)[: config.max_utterances]
              for name in ("test", "heldout_talker")}
    # diversity on test utterances (a tiny corpus may have none: then the held-out talkers')
    spread_split = "test" if splits["test"] else "heldout_talker"
    spread_clips = splits[spread_split]
    own_steps = model.config.sampler_steps
    rows: dict[str, dict[str, Any]] = {}
    timing: dict[str, Any] = {}
    spread: dict[str, float] = {}

    def row(key: str, talker: Talker, steps: int | None, sampler: str | None,
            repeats: int) -> None:
        rows[key] = {s: evaluate_talker(talker, clips, steps, config.seed, sampler=sampler)
                     for s, clips in splits.items() if clips}
        timing[key] = window_time_ms(talker, steps, sampler, repeats)
        spread[key] = sample_diversity(talker, spread_clips, steps, sampler, config)

    label = f"checkpoint_{model.config.sampler}{own_steps}"
    row(label, model, None, None, config.timing_repeats)
    if config.teacher:
        teacher = Talker.from_checkpoint(Path(config.teacher))
        n_train = teacher.config.schedule.n_train_steps
        row(f"teacher_ddpm{n_train}", teacher, n_train, "ddpm", 2)
        for steps in config.steps or (own_steps,):
            row(f"teacher_ddim{steps}", teacher, steps, "ddim", config.timing_repeats)
    if baseline is not None:
        row("regression", baseline, None, None, config.timing_repeats)
    test = splits["test"]
    # "own" is the checkpoint row itself (same clips, seed and identity): not generated again
    personal = {"own": rows[label]["test"]["lve"],
                **{ident: evaluate_talker(model, test, seed=config.seed, identity=ident)["lve"]
                   for ident in ("mean", "wrong")}} if test else {}
    results = {
        "checkpoint": str(path),
        "config": asdict(config),
        "rows": rows,
        "personalisation_lve": personal,
        "identity_from_audio": identity_accuracy(model, test),
        "window_1s_cpu_ms": timing,
        "diversity_m": spread,
        "diversity_split": spread_split,
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
    }
    results["summary"] = summarise(results)
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios the targets are stated in."""
    rows, out = results["rows"], {}
    for name, splits in rows.items():
        out[name] = {s: {k: round(v[k], 9) for k in ("lve", "fdd", "mve")}
                     for s, v in splits.items()}
    personal = results["personalisation_lve"]
    if personal:
        out["true_vs_wrong_identity_lve"] = round(personal["own"] / personal["wrong"], 4)
        out["true_vs_mean_identity_lve"] = round(personal["own"] / personal["mean"], 4)
    out["identity_top1"] = results["identity_from_audio"]["top1"]
    out["diversity_m"] = {k: round(v, 9) for k, v in results.get("diversity_m", {}).items()}
    return out


def markdown_table(results: dict[str, Any]) -> str:
    """The results as markdown: metric rows per sampler and split, then the ratios."""
    lines = ["| model / sampler | split | LVE (m²) | FDD (m²) | MVE (m) "
             "| 1-s window, 1 thread (ms p50) | diversity (m) |", "|---|---|---|---|---|---|---|"]
    timing = results.get("window_1s_cpu_ms", {})
    spread = results.get("diversity_m", {})
    for name, splits in results["rows"].items():
        for split, m in splits.items():
            ms = timing.get(name, {}).get("p50", "")
            div = f"{spread[name]:.2e}" if name in spread and split == results.get(
                "diversity_split", "test") else ""
            lines.append(f"| {name} | {split} | {m['lve']:.3e} | {m['fdd']:.3e} | "
                         f"{m['mve']:.3e} | {ms} | {div} |")
    personal = results.get("personalisation_lve") or {}
    ident = results.get("identity_from_audio") or {}
    lines += ["", "| personalisation (test split, checkpoint) | value |", "|---|---|"]
    for key in ("own", "mean", "wrong"):
        if key in personal:
            lines.append(f"| LVE with the {key} identity | {personal[key]:.3e} |")
    summary = results.get("summary", {})
    for key in ("true_vs_wrong_identity_lve", "true_vs_mean_identity_lve"):
        if key in summary:
            lines.append(f"| {key.replace('_', ' ')} | {summary[key]} |")
    if ident.get("top1") is not None:
        lines.append(f"| identity from {ident['seconds']:g} s of audio, top-1 "
                     f"(n={ident['n']}, chance {ident['chance']:.3f}) | {ident['top1']:.3f} |")
    first = next(iter(results["rows"].values()), {})
    masks = next(iter(first.values()), {}).get("masks", {})
    if masks:
        lines += ["", f"Masks: {masks.get('lip')}, {masks.get('upper_face')}."]
    return "\n".join(lines)
