"""Training the teacher: random windows of utterances, the Talker's own loss, periodic validation.

    train(dataset, TrainConfig.preset("default"), "runs/teacher", seed=0)

writes into ``out_dir``: ``last.safetensors`` (+ ``last.state.pt``: optimiser and RNG states, for
``resume``), ``best.safetensors`` (lowest validation LVE), ``talker.safetensors`` (the final model)
and ``log.jsonl`` (one JSON object per log/validation line). Same seed, same data, same numbers:
all randomness comes from one numpy Generator and one torch Generator seeded from ``seed``.

The dataset is a ``models.data.dataset.TalkingFaceDataset`` (our corpus, a VOCASET/BIWI folder, or
``models.data.toy.toy_dataset``); ``models.data.windows`` turns it into clips and training windows.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.augment import AugmentConfig
from models.data.dataset import TalkingFaceDataset
from models.data.windows import Clip, WindowSampler, coeff_stats, load_clips
from models.net.talker import ModelSize, Talker, TalkerConfig
from models.training.metrics import evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSize = field(default_factory=ModelSize)
    window_frames: int = 64  # 2.1 s: longer than the encoder's 1 s reach, short enough to batch
    batch_size: int = 32
    n_steps: int = 60000
    lr: float = 3e-4
    warmup_steps: int = 1000
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    p_window_at_start: float = 0.25  # streams start from silence: train that case often
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    sampler_steps: int = 64  # DDIM grid stored in the teacher checkpoint (distillation starts here)
    val_steps: int = 64  # DDIM steps for the validation LVE
    val_every: int = 2000
    val_utterances: int = 32
    checkpoint_every: int = 1000
    log_every: int = 100
    train_split: str = "train"
    val_split: str = "val"
    objective: str = "diffusion"  # or "regression": the deterministic baseline (same network)

    @staticmethod
    def preset(name: str) -> TrainConfig:
        if name == "default":
            # Sized for the 2-core CPU machine: about 30 minutes there (DESIGN §10 machine).
            return TrainConfig(n_steps=6000, warmup_steps=300, val_every=1000, val_utterances=16,
                               checkpoint_every=500)
        if name == "full":  # the long run, for a GPU or a patient CPU
            return TrainConfig()
        if name == "tiny":  # tests: seconds of training on a toy corpus
            return TrainConfig(
                model=ModelSize(audio_dim=16, dilations=(1, 2), lookahead_frames=3, hidden=32,
                                n_layers=1, identity_dim=8, joint_dim=8, time_dim=8, dropout=0.0),
                window_frames=24, batch_size=8, n_steps=60, lr=3e-3, warmup_steps=5,
                augment=None, sampler_steps=8, val_steps=4, val_every=30, val_utterances=2,
                checkpoint_every=30, log_every=10)
        raise ValueError(f"unknown preset {name!r}: use 'tiny', 'default' or 'full'")


# ----------------------------------------------------------------------------- validation

def evaluate_talker(talker: Talker, clips: list[Clip], steps: int | None = None, seed: int = 0,
                    max_clips: int | None = None, identity: str | None = "own",
                    sampler: str | None = None) -> dict[str, Any]:
    """LVE/FDD/MVE of ``talker.generate`` on clips. identity: "own" (each clip's talker; unknown
    talkers get the mean), "wrong" (the next training talker in bank order), "mean"/None, or a
    name used for every clip."""
    preds, gts, templates = [], [], []
    names = talker.identities
    for clip in clips[:max_clips]:
        known = clip.talker in names
        if identity == "own":
            ident = clip.talker if known else None
        elif identity == "wrong":
            ident = names[(names.index(clip.talker) + 1) % len(names)] if known else None
        else:
            ident = None if identity == "mean" else identity
        c = talker.generate(clip.audio, ident, steps=steps, seed=seed, sampler=sampler)
        n = min(len(c), len(clip.coeffs))
        # The motion goes on the clip's own subject: metrics compare faces, not templates.
        preds.append(talker.basis.decode(c[:n], clip.template))
        gts.append(clip.vertices[:n])
        templates.append(clip.template)
    return evaluate(preds, gts, templates, talker.basis.masks, mask_source="checkpoint")


# ----------------------------------------------------------------------------- the loop

def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    p = (step - config.warmup_steps) / max(1, config.n_steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _subjects(dataset: TalkingFaceDataset, identities: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Templates of the training talkers whose neutral face is not the basis's own (vertex
    datasets): the checkpoint keeps them, so generation can put the motion on them."""
    own = dataset.basis.template
    return {name: t for name, t in dataset.templates().items()
            if name in identities and not np.array_equal(t, own)}


def _identities(dataset: Any, clips: list[Clip]) -> tuple[str, ...]:
    present = {c.talker for c in clips}
    order = [str(getattr(t, "name", t)) for t in getattr(dataset, "talkers", [])]
    return tuple([t for t in order if t in present] + sorted(present - set(order)))


def train(dataset: Any, config: TrainConfig, out_dir: str | Path, seed: int = 0,
          progress: bool = True, resume: bool = True, stop_at: int | None = None) -> Path:
    """Train a teacher; returns the path of the final checkpoint (``talker.safetensors``).

    ``resume`` continues from ``out_dir/last.*`` (same config and seed give the same run as an
    uninterrupted one); ``stop_at`` ends this call after that step with a checkpoint (time-sliced
    jobs), returning ``last.safetensors``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    basis = dataset.basis
    raw = load_clips(dataset, config.train_split)
    identities = _identities(dataset, raw)
    clips = load_clips(dataset, config.train_split, identities)
    val = load_clips(dataset, config.val_split, identities)
    mean, std = coeff_stats(clips)
    cfg = TalkerConfig.build(config.model, basis.names, identities,
                             sampler_steps=config.sampler_steps, objective=config.objective)
    model = Talker(cfg, basis, mean, std, subjects=_subjects(dataset, identities))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, best = 0, math.inf
    if resume and (out / "last.safetensors").exists():
        step, best = _resume(model, opt, rng, gen, out)
        log.info("resumed from %s at step %d", out / "last.safetensors", step)
    sampler = WindowSampler(clips, config.window_frames, cfg.features, model.receptive_field,
                            config.p_window_at_start, config.augment)
    meta = {"train_config": asdict(config), "seed": seed}
    bar = _progress(progress, step, config.n_steps)
    t0, running = time.monotonic(), {}
    while step < config.n_steps:
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        terms = model.loss(sampler.batch(config.batch_size, rng), generator=gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        step += 1
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if bar is not None:
            bar.update(1)
        if step % config.log_every == 0:
            _log(out, {"step": step, "lr": lr_at(step - 1, config),
                       "s": round(time.monotonic() - t0, 2),
                       **{k: v / config.log_every for k, v in running.items()}})
            running = {}
        if step % config.val_every == 0 and val:
            metrics = evaluate_talker(model, val, config.val_steps, max_clips=config.val_utterances)
            _log(out, {"step": step, "val": metrics})
            if metrics["lve"] < best:
                best = metrics["lve"]
                model.save(out / "best.safetensors", {**meta, "step": step, "val": metrics})
        if step % config.checkpoint_every == 0 or step in (config.n_steps, stop_at):
            _checkpoint(model, opt, rng, gen, out, step, best, meta)
        if step == stop_at:
            if bar is not None:
                bar.close()
            return out / "last.safetensors"
    if bar is not None:
        bar.close()
    return model.save(out / "talker.safetensors", {**meta, "step": step, "best_val_lve": best})


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)


def _log(out: Path, record: dict[str, Any]) -> None:
    log.info("%s", record)
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def _checkpoint(model: Talker, opt: torch.optim.Optimizer, rng: np.random.Generator,
                gen: torch.Generator, out: Path, step: int, best: float, meta: dict) -> None:
    model.save(out / "last.safetensors", {**meta, "step": step})
    torch.save({"step": step, "best": best, "optimizer": opt.state_dict(),
                "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state()},
               out / "last.state.pt")


def _resume(model: Talker, opt: torch.optim.Optimizer, rng: np.random.Generator,
            gen: torch.Generator, out: Path) -> tuple[int, float]:
    saved = Talker.from_checkpoint(out / "last.safetensors")
    model.load_state_dict(saved.state_dict())
    state = torch.load(out / "last.state.pt", weights_only=False)
    opt.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["numpy_rng"]
    gen.set_state(state["torch_rng"])
    return int(state["step"]), float(state["best"])


__all__ = ["TrainConfig", "evaluate_talker", "lr_at", "train"]
