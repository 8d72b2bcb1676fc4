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

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.dataset import TalkingFaceDataset
from models.data.windows import Clip, WindowSampler, coeff_stats, load_clips
from models.net.audio_encoder import AudioEncoderConfig
from models.net.denoiser import DenoiserConfig
from models.net.identity import IdentityConfig
from models.net.talker import LossConfig, ModelSize, Talker, TalkerConfig
from models.training.articulation import LipTrack, articulation, lip_gap
from models.training.loop import (
    LoopConfig,
    append_log,
    generators,
    optimise,
    optimizer,
    warmup_cosine,
)
from models.training.metrics import evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSize = field(default_factory=ModelSize)
    loop: LoopConfig = field(default_factory=LoopConfig)  # batches, optimiser, log, splits
    n_steps: int = 60000  # the lr decays over all of them (loop.warmup_cosine)
    sampler_steps: int = 64  # the DDIM grid the teacher checkpoint generates with by default
    val_steps: int = 64  # DDIM steps for the validation LVE
    val_every: int = 2000
    checkpoint_every: int = 1000
    objective: str = "diffusion"  # or "regression": the deterministic baseline (same network)
    loss: LossConfig = field(default_factory=LossConfig)  # term weights and condition dropout

    @staticmethod
    def preset(name: str) -> TrainConfig:
        if name == "default":
            # Sized for the 2-core CPU machine: about 30 minutes there (DESIGN §10 machine).
            return TrainConfig(loop=LoopConfig(warmup_steps=300, val_utterances=16),
                               n_steps=6000, val_every=1000, checkpoint_every=500)
        if name == "full":  # the long run, for a GPU or a patient CPU
            return TrainConfig()
        if name == "tiny":  # tests: seconds of training on a toy corpus
            return TrainConfig(
                model=ModelSize(encoder=AudioEncoderConfig(d_model=16, dilations=(1, 2),
                                                           dropout=0.0),
                                denoiser=DenoiserConfig(time_dim=8, hidden=32),
                                identity=IdentityConfig(dim=8, joint_dim=8)),
                loop=LoopConfig(batch_size=8, window_frames=24, augment=None, lr=3e-3,
                                warmup_steps=5, log_every=10, val_utterances=2),
                n_steps=60, sampler_steps=8, val_steps=4, val_every=30, checkpoint_every=30)
        raise ValueError(f"unknown preset {name!r}: use 'tiny', 'default' or 'full'")


# ----------------------------------------------------------------------------- validation

def evaluate_talker(talker: Talker, clips: list[Clip], steps: int | None = None, seed: int = 0,
                    max_clips: int | None = None, identity: str | None = "own",
                    sampler: str | None = None, lip_pair: tuple[int, int] | None = None,
                    guidance: float | None = None) -> dict[str, Any]:
    """LVE/FDD/MVE of ``talker.generate`` on clips. identity: "own" (each clip's talker; unknown
    talkers get the mean), "wrong" (the next training talker in bank order), "mean"/None, or a
    name used for every clip. ``guidance``: the sampling's guidance scale (None: the talker's
    own). With ``lip_pair`` (the lip centre vertices) and clips that carry phones, also the
    ``articulation`` block (``models.training.articulation``)."""
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
        c = talker.generate(clip.audio, ident, steps=steps, seed=seed, sampler=sampler,
                            guidance=guidance)
        n = min(len(c), len(clip.coeffs))
        # The motion goes on the clip's own subject: metrics compare faces, not templates.
        preds.append(talker.basis.decode(c[:n], clip.template))
        gts.append(clip.vertices[:n])
        templates.append(clip.template)
    result = evaluate(preds, gts, templates, talker.basis.masks, mask_source="checkpoint")
    if lip_pair is not None:
        tracks = [LipTrack(lip_gap(p, lip_pair), lip_gap(g, lip_pair), c.phones)
                  for p, g, c in zip(preds, gts, clips, strict=False)]
        result["articulation"] = articulation(tracks, talker.contract.fps)
    return result


# ----------------------------------------------------------------------------- training

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
    rng, gen = generators(seed)
    loop = config.loop
    identities = _identities(dataset, load_clips(dataset, loop.train_split))
    clips = load_clips(dataset, loop.train_split, identities)
    val = load_clips(dataset, loop.val_split, identities)
    mean, std = coeff_stats(clips)
    cfg = TalkerConfig.build(config.model, dataset.basis.names, identities,
                             sampler_steps=config.sampler_steps, objective=config.objective,
                             loss=config.loss)
    model = Talker(cfg, dataset.basis, mean, std, subjects=_subjects(dataset, identities))
    opt = optimizer(model, loop)
    start, best = 0, math.inf
    if resume and (out / "last.safetensors").exists():
        start, best = _resume(model, opt, rng, gen, out)
        log.info("resumed from %s at step %d", out / "last.safetensors", start)
    sampler = WindowSampler(clips, loop.window_frames, cfg.features, model.receptive_field,
                            loop.p_window_at_start, loop.augment)
    meta = {"train_config": asdict(config), "seed": seed}
    steps = optimise(model, opt, lambda batch: model.loss(batch, generator=gen),
                     lambda: sampler.batch(loop.batch_size, rng),
                     warmup_cosine(loop.lr, loop.warmup_steps, config.n_steps), loop, out,
                     range(start, config.n_steps), progress)
    for step in steps:
        if step % config.val_every == 0 and val:
            metrics = evaluate_talker(model, val, config.val_steps, max_clips=loop.val_utterances)
            append_log(out, {"step": step, "val": metrics})
            if metrics["lve"] < best:
                best = metrics["lve"]
                model.save(out / "best.safetensors", {**meta, "step": step, "val": metrics})
        if step % config.checkpoint_every == 0 or step in (config.n_steps, stop_at):
            _checkpoint(model, opt, rng, gen, out, step, best, meta)
        if step == stop_at:
            return out / "last.safetensors"
    return model.save(out / "talker.safetensors",
                      {**meta, "step": config.n_steps, "best_val_lve": best})


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


__all__ = ["TrainConfig", "evaluate_talker", "train"]
