"""``talker eval``: the results table of DESIGN §10 / the model issue, as one JSON document.

For a checkpoint (usually the distilled student) and optionally its teacher, on the corpus's
``test`` utterances (training talkers), ``heldout_talker`` (unseen talkers), and where the corpus
has them ``heldout_voice`` (known talkers, unseen espeak voices) and ``heldout_synth`` (known
talkers, a synthesiser never trained on: the stand-in for real voices):
- LVE / FDD / MVE of the checkpoint at its own steps and guidance, of the teacher at all its
  training steps (DDPM, the many-step reference), of the teacher under plain DDIM at each step
  count asked (``teacher_ddim{steps}``, at the teacher's own guidance, and
  ``teacher_ddim{steps}_g{G}`` at each classifier-free guidance scale G asked), and of a
  deterministic regression baseline (same network, no diffusion) when one is given;
- personalisation: LVE with the true identity, the mean identity and a wrong one (the next
  training talker in bank order);
- diversity of each row: mean per-vertex distance between samples of the same audio and identity
  drawn with different seeds (what a sampler adds over the deterministic regression: 0 there);
- identity picked from the first 3 s of audio: top-1 accuracy over test utterances;
- CPU time to generate one 1-s window with each sampler, one thread, after a warm-up;
- articulation (``models.training.articulation``: p/b/m closures, lip-gap amplitude, vowel
  opening, lag) of every row with each talker's own identity, and of the checkpoint with the
  server's default (mean) identity, where the corpus names the lip vertices and has phone times.
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

SPLITS = ("test", "heldout_talker", "heldout_voice", "heldout_synth")  # evaluated when present


@dataclass(frozen=True)
class EvalConfig:
    max_utterances: int = 40  # per split: the table is about trends, generation is not free
    steps: tuple[int, ...] = ()  # teacher DDIM step counts; () = (the checkpoint's steps,)
    guidance: tuple[float, ...] = ()  # more teacher DDIM rows, at these guidance scales
    teacher: str | None = None  # teacher checkpoint for the all-steps and DDIM rows
    baseline: str | None = None  # regression checkpoint (``talker train --objective regression``)
    seed: int = 0
    timing_repeats: int = 10
    diversity_utterances: int = 8  # test utterances, each sampled with ``diversity_seeds``
    diversity_seeds: int = 3
    ddpm: bool = True  # the teacher's all-steps ancestral row (slow: every training step)
    splits: tuple[str, ...] = SPLITS  # those the corpus has are evaluated; "test" always


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
                     config: EvalConfig, guidance: float | None = None) -> float:
    """Mean over utterances of ``metrics.diversity`` between seeds (own identity), in metres."""
    values = []
    for clip in clips[: config.diversity_utterances]:
        ident = clip.talker if clip.talker in talker.identities else None
        samples = [talker.basis.decode(talker.generate(clip.audio, ident, steps=steps,
                                                       seed=config.seed + k, sampler=sampler,
                                                       guidance=guidance),
                                       clip.template)
                   for k in range(config.diversity_seeds)]
        values.append(diversity(samples))
    return float(np.mean(values)) if values else 0.0


def window_time_ms(talker: Talker, steps: int | None, sampler: str | None,
                   repeats: int, guidance: float | None = None) -> dict[str, float]:
    """Generate one 1-s window (30 frames) on one thread: p50/p95 milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
        talker.generate(audio, None, steps=steps, sampler=sampler, guidance=guidance)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            talker.generate(audio, None, steps=steps, sampler=sampler, guidance=guidance)
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
    if config.guidance and not config.teacher:
        raise ModelError("guidance rows are teacher rows: give a teacher checkpoint too")
    ids = tuple(model.identities)
    splits = {name: load_clips(dataset, name, ids)[: config.max_utterances]
              for name in dict.fromkeys(("test", *config.splits))}
    splits = {k: v for k, v in splits.items() if v or k == "test"}
    pair = getattr(dataset, "lip_pair", None)
    # diversity on test utterances (a tiny corpus may have none: then the next split's)
    spread_split = next((k for k, v in splits.items() if v), "test")
    spread_clips = splits[spread_split]
    own_steps = model.config.sampler_steps
    rows: dict[str, dict[str, Any]] = {}
    timing: dict[str, Any] = {}
    spread: dict[str, float] = {}

    def row(key: str, talker: Talker, steps: int | None, sampler: str | None,
            repeats: int, guidance: float | None = None) -> None:
        rows[key] = {s: evaluate_talker(talker, clips, steps, config.seed, sampler=sampler,
                                        lip_pair=pair, guidance=guidance)
                     for s, clips in splits.items() if clips}
        timing[key] = window_time_ms(talker, steps, sampler, repeats, guidance)
        spread[key] = sample_diversity(talker, spread_clips, steps, sampler, config, guidance)

    label = f"checkpoint_{model.config.sampler}{own_steps}"
    row(label, model, None, None, config.timing_repeats)
    if config.teacher:
        teacher = Talker.from_checkpoint(Path(config.teacher))
        n_train = teacher.config.schedule.n_train_steps
        if config.ddpm:
            row(f"teacher_ddpm{n_train}", teacher, n_train, "ddpm", 2)
        for steps in config.steps or (own_steps,):
            row(f"teacher_ddim{steps}", teacher, steps, "ddim", config.timing_repeats)
            for g in config.guidance:
                row(f"teacher_ddim{steps}_g{g:g}", teacher, steps, "ddim",
                    config.timing_repeats, g)
    if baseline is not None:
        row("regression", baseline, None, None, config.timing_repeats)
    test = splits["test"]
    # The server's default (mean) identity as well as each talker's own: metrics and articulation.
    default_rows = {s: evaluate_talker(model, clips, seed=config.seed, identity="mean",
                                       lip_pair=pair)
                    for s, clips in splits.items() if clips}
    # "own" is the checkpoint row itself (same clips, seed and identity): not generated again
    personal = {"own": rows[label]["test"]["lve"], "mean": default_rows["test"]["lve"],
                "wrong": evaluate_talker(model, test, seed=config.seed, identity="wrong")["lve"]
                } if test else {}
    default_identity = {s: r["articulation"] for s, r in default_rows.items()
                        if "articulation" in r}
    results = {
        "checkpoint": str(path),
        "checkpoint_guidance": model.config.guidance,
        "config": asdict(config),
        "rows": rows,
        "personalisation_lve": personal,
        "articulation_default_identity": default_identity,
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
    out["articulation"] = {f"{name}/{identity}/{split}": _headline(a)
                           for name, identity, split, a in _articulation_rows(results)}
    return out


def _articulation_rows(results: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(row, identity, split, articulation block) for every row that has one."""
    out = [(name, "own", split, m["articulation"]) for name, splits in results["rows"].items()
           for split, m in splits.items() if "articulation" in m]
    first = next(iter(results["rows"]), "")
    out += [(first, "default", split, a)
            for split, a in (results.get("articulation_default_identity") or {}).items()]
    return out


def _headline(a: dict[str, Any]) -> dict[str, Any]:
    def r(x: float | None, nd: int) -> float | None:
        return None if x is None else round(x, nd)
    return {"bilabial_closure": r(a["pred"]["bilabial_closure"], 4),
            "bilabial_closure_true": r(a["true"]["bilabial_closure"], 4),
            "p90_gap_ratio": r(a["p90_gap_ratio"], 4),
            "vowel_opening_ratio": r(a["vowel_opening_ratio"], 4),
            "lag_ms": r(a["lag_ms"], 1)}


def _fmt(x: float | None, nd: int) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


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
    arts = _articulation_rows(results)
    if arts:
        lines += ["", "| articulation: model / sampler | identity | split | p/b/m closed "
                  "(truth) | p90 lip gap, mm (truth) | ratio | vowel opening ratio | lag (ms) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, identity, split, a in arts:
            p, t = a["pred"], a["true"]
            lines.append(f"| {name} | {identity} | {split} | {_fmt(p['bilabial_closure'], 3)} "
                         f"({_fmt(t['bilabial_closure'], 3)}, n={p['bilabials']}) | "
                         f"{1000 * p['p90_gap_m']:.1f} ({1000 * t['p90_gap_m']:.1f}) | "
                         f"{_fmt(a['p90_gap_ratio'], 2)} | {_fmt(a['vowel_opening_ratio'], 2)} | "
                         f"{_fmt(a['lag_ms'], 1)} |")
    first = next(iter(results["rows"].values()), {})
    masks = next(iter(first.values()), {}).get("masks", {})
    if masks:
        lines += ["", f"Masks: {masks.get('lip')}, {masks.get('upper_face')}."]
    return "\n".join(lines)
