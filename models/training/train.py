"""Training the teacher: random windows of utterances, the Talker's own loss, periodic validation.

    train(dataset, TrainConfig.preset("default"), "runs/teacher", seed=0)

writes into ``out_dir``: ``last.safetensors`` (+ ``last.state.pt``: optimiser and RNG states, for
``resume``), ``best.safetensors`` (lowest validation LVE), ``talker.safetensors`` (the final model)
and ``log.jsonl`` (one JSON object per log/validation line). Same seed, same data, same numbers:
all randomness comes from one numpy Generator and one torch Generator seeded from ``seed``.

The dataset needs ``basis`` (template, basis, names, masks) and ``utterances(split)`` (objects with
``talker``, ``audio`` (16 kHz float32), ``vertices`` (T, V, 3), ``weights`` (T, K) or None). Windows
are cut here (not by the dataset) because the audio encoder needs its exact context around them.
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

from models.data.augment import AugmentConfig, augment
from models.net.features import FeatureConfig, frame_features
from models.net.talker import Basis, ModelSize, Talker, TalkerConfig, TrainBatch
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


# ----------------------------------------------------------------------------- data

@dataclass
class Clip:
    """One utterance ready for training: audio, coefficient target, bank index."""

    id: str
    audio: np.ndarray  # (N,) float32 16 kHz
    coeffs: np.ndarray  # (T, K) float32
    vertices: np.ndarray | None  # (T, V, 3) ground truth, for metrics
    talker: str
    index: int  # bank index, -1 for talkers outside the bank


def load_clips(dataset: Any, split: str, identities: tuple[str, ...] | None = None) -> list[Clip]:
    """Utterances of a split with coefficient targets (weights, or the basis encoding)."""
    clips = []
    for u in dataset.utterances(split):
        w = u.weights if u.weights is not None else dataset.basis.encode(u.vertices)
        idx = identities.index(u.talker) if identities and u.talker in identities else -1
        clips.append(Clip(str(u.id), np.asarray(u.audio, np.float32), np.asarray(w, np.float32),
                          None if u.vertices is None else np.asarray(u.vertices, np.float32),
                          str(u.talker), idx))
    return clips


def coeff_stats(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and std over all training frames; std floored so that unused
    coefficients (std 0) are not blown up into unit-variance noise targets."""
    c = np.concatenate([x.coeffs for x in clips]).astype(np.float64)
    std = c.std(0)
    std = np.maximum(std, max(1e-2 * std.max(), 1e-6))
    return c.mean(0).astype(np.float32), std.astype(np.float32)


CROP_MARGIN_FRAMES = 30  # spare context in an augmentation crop (1 s at 30 fps)


class WindowSampler:
    """Random training windows with the audio context the encoder needs around them."""

    def __init__(self, clips: list[Clip], window_frames: int, features: FeatureConfig,
                 receptive_field: tuple[int, int], p_start: float = 0.25,
                 augment_config: AugmentConfig | None = None):
        self.clips = [c for c in clips if c.index >= 0]
        if not self.clips:
            raise ValueError("no training utterances with a known talker")
        self.W, self.features, self.rf = window_frames, features, receptive_field
        self.p_start, self.augment = p_start, augment_config

    def window(self, clip: Clip, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray,
                                                                     np.ndarray]:
        audio, coeffs = clip.audio, clip.coeffs
        (left, right), at_start = self.rf, rng.random() < self.p_start
        if self.augment is not None:
            # Augment only a crop around the window (with 1 s to spare for speed and inserted
            # pauses): augmenting whole utterances cost more than the training step itself.
            span = left + self.W + right + CROP_MARGIN_FRAMES
            c0 = 0 if at_start else int(rng.integers(0, max(1, len(coeffs) - span + 1)))
            sr, fps = self.features.sample_rate_hz, self.features.fps
            s0, s1 = c0 * sr // fps, (c0 + span) * sr // fps
            audio, coeffs = augment(audio[s0:s1], coeffs[c0:c0 + span], rng, self.augment)
            lo = 0 if c0 == 0 else left  # a crop's left context must lie inside the crop
        else:
            lo = 0
        T = len(coeffs)
        start = 0 if at_start else int(rng.integers(lo, max(lo + 1, T - self.W + 1)))
        feats = frame_features(audio, start - left, left + self.W + right, self.features)
        target = np.zeros((self.W, coeffs.shape[1]), np.float32)
        n = min(self.W, T - start)
        target[:n] = coeffs[start:start + n]
        mask = np.arange(self.W) < n
        return feats, target, mask

    def batch(self, batch_size: int, rng: np.random.Generator) -> TrainBatch:
        picks = [self.clips[i] for i in rng.integers(0, len(self.clips), batch_size)]
        parts = [self.window(c, rng) for c in picks]
        return TrainBatch(features=torch.stack([p[0] for p in parts]),
                          coeffs=torch.from_numpy(np.stack([p[1] for p in parts])),
                          talker=torch.tensor([c.index for c in picks]),
                          mask=torch.from_numpy(np.stack([p[2] for p in parts])))


# ----------------------------------------------------------------------------- validation

def evaluate_talker(talker: Talker, clips: list[Clip], steps: int | None = None, seed: int = 0,
                    max_clips: int | None = None, identity: str | None = "own",
                    sampler: str | None = None) -> dict[str, Any]:
    """LVE/FDD/MVE of ``talker.generate`` on clips. identity: "own" (each clip's talker; unknown
    talkers get the mean), "wrong" (the next training talker in bank order), "mean"/None, or a
    name used for every clip."""
    preds, gts = [], []
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
        gt = clip.vertices if clip.vertices is not None else talker.rig_vertices(clip.coeffs)
        preds.append(talker.rig_vertices(c[:n]))
        gts.append(gt[:n])
    b = talker.basis
    return evaluate(preds, gts, b.template, b.masks, mask_source="checkpoint")


# ----------------------------------------------------------------------------- the loop

def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    p = (step - config.warmup_steps) / max(1, config.n_steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


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
    basis = Basis.from_any(dataset.basis)
    raw = load_clips(dataset, config.train_split)
    identities = _identities(dataset, raw)
    clips = load_clips(dataset, config.train_split, identities)
    val = load_clips(dataset, config.val_split, identities)
    mean, std = coeff_stats(clips)
    cfg = TalkerConfig.build(config.model, basis.names, identities,
                             sampler_steps=config.sampler_steps, objective=config.objective)
    model = Talker(cfg, basis, mean, std)
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


# ----------------------------------------------------------------------------- a toy corpus

@dataclass
class ToyUtterance:
    id: str
    talker: str
    split: str
    audio: np.ndarray
    vertices: np.ndarray
    weights: np.ndarray
    fps: int = 30


class ToyDataset:
    """A tiny synthetic corpus with the dataset API, for tests and smoke runs: tone bursts whose
    loudness envelope drives the first coefficient ("jaw"), scaled by a per-talker gain, plus a
    per-talker constant on the second ("smile"); the others stay near zero."""

    def __init__(self, n_talkers: int = 2, n_utterances: int = 4, seconds: float = 1.5,
                 n_coeffs: int = 5, n_vertices: int = 24, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.talkers = [f"toy{i}" for i in range(n_talkers)]
        V = n_vertices
        masks = {"lip": np.arange(V) < V // 4, "upper_face": np.arange(V) >= V // 2}
        self.basis = _ToyBasis(rng.normal(size=(V, 3)).astype(np.float32),
                               (rng.normal(size=(n_coeffs, V, 3)) * 0.01).astype(np.float32),
                               tuple(f"c{i}" for i in range(n_coeffs)), masks)
        self._utts = []
        for ti, name in enumerate(self.talkers):
            for j in range(n_utterances):
                split = "val" if j == n_utterances - 1 else "train"
                self._utts.append(self._utterance(rng, name, ti, j, split, seconds, n_coeffs))

    def _utterance(self, rng, name, ti, j, split, seconds, K) -> ToyUtterance:
        n = int(seconds * 16000)
        T = -(-n * 30 // 16000)
        env_frames = np.clip(np.convolve(rng.random(T) > 0.6, np.ones(4) / 4, "same"), 0, 1)
        env = np.interp(np.arange(n) / 16000 * 30, np.arange(T), env_frames)
        tone = np.sin(2 * np.pi * (150 + 60 * ti) * np.arange(n) / 16000)
        audio = (0.3 * env * tone + 0.003 * rng.standard_normal(n)).astype(np.float32)
        w = np.zeros((T, K), np.float32)
        w[:, 0] = (0.5 + 0.5 * ti) * env_frames
        w[:, 1] = 0.2 * ti
        verts = self.basis.decode(w)
        return ToyUtterance(f"{name}_{j}", name, split, audio, verts, w)

    def utterances(self, split: str) -> list[ToyUtterance]:
        return [u for u in self._utts if u.split == split]


@dataclass(frozen=True)
class _ToyBasis:
    template: np.ndarray
    basis: np.ndarray
    names: tuple[str, ...]
    masks: dict[str, np.ndarray]

    def decode(self, w: np.ndarray) -> np.ndarray:
        K, V, _ = self.basis.shape
        return (w @ self.basis.reshape(K, -1)).reshape(*w.shape[:-1], V, 3) + self.template

    def encode(self, vertices: np.ndarray) -> np.ndarray:
        K, V, _ = self.basis.shape
        flat = (vertices - self.template).reshape(len(vertices), -1)
        return np.linalg.lstsq(self.basis.reshape(K, -1).T, flat.T, rcond=None)[0].T


__all__ = ["TrainConfig", "train", "WindowSampler", "load_clips", "coeff_stats",
           "evaluate_talker", "ToyDataset"]
