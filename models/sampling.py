"""Noise schedule and samplers, as plain functions (the k-diffusion habit, STYLE habit 6).

The network predicts the clean motion x0 (DESIGN §2). Every sampler has one signature

    sample_xxx(model_fn, x_T, timesteps, cond, callback=None, prefix=None, ...) -> x0

- ``model_fn(x_t, t, cond) -> x0_hat``: x_t (B, T, K), t an int training-step index; the sampler
  calls it exactly once per step, in order (a streaming model_fn relies on that to pick its state);
- ``timesteps``: a ``Steps`` (training-step indices and their alpha_bar, noisiest first), from
  ``respace``; the teacher and the distilled students differ only in this argument;
- ``prefix``: optional known clean frames (B, P, K) at the start of the sequence (inpainting): at
  every step they are replaced by q(x_t | prefix) using the same noise as x_T for those frames, and
  the result keeps them exactly.

Nothing here knows about audio, identities or streaming.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ModelFn = Callable[[torch.Tensor, int, Any], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ScheduleConfig:
    n_train_steps: int = 500  # FaceDiffuser's teacher length on BIWI (DESIGN §2)
    cosine_offset: float = 0.008  # Nichol & Dhariwal's s: keeps beta_0 from vanishing
    max_beta: float = 0.999  # clip, so the last step is not a pure division by zero


def cosine_alpha_bar(config: ScheduleConfig) -> torch.Tensor:
    """(T,) float64 alpha_bar[t] for training-step indices t = 0 (least noise) .. T-1 (most)."""
    T, s = config.n_train_steps, config.cosine_offset

    def f(u: float) -> float:
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(t + 1) / f(t), config.max_beta) for t in range(T)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)


@dataclass(frozen=True)
class Steps:
    """A sampling grid: training-step indices t (noisiest first) and their alpha_bar."""

    t: tuple[int, ...]
    alpha_bar: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.t)

    def next_alpha_bar(self, i: int) -> float:
        """alpha_bar after step i (1.0 = clean, after the last step)."""
        return self.alpha_bar[i + 1] if i + 1 < len(self.t) else 1.0


def respace(alpha_bar: torch.Tensor, n_steps: int) -> Steps:
    """An n-step grid t_i = round(T * i / n) - 1, i = n..1. Nested: the n-step grid is every other
    step of the 2n-step grid, as progressive distillation needs."""
    T = len(alpha_bar)
    if not 1 <= n_steps <= T:
        raise ValueError(f"n_steps must be in 1..{T}, got {n_steps}")
    ts = tuple(int(math.floor(T * i / n_steps + 0.5)) - 1 for i in range(n_steps, 0, -1))
    return Steps(ts, tuple(float(alpha_bar[t]) for t in ts))


def q_sample(x0: torch.Tensor, alpha_bar: float | torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) = N(sqrt(ab) x0, (1 - ab) I) with the given standard noise."""
    ab = torch.as_tensor(alpha_bar, dtype=x0.dtype)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, ab: float, ab_next: float,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One step from alpha_bar ``ab`` to ``ab_next`` given the x0 estimate. eta=0: DDIM (no noise);
    eta=1: the DDPM ancestral posterior q(x_next | x_t, x0) for that respaced step."""
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    var = eta ** 2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
    x_next = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - var, 0.0)) * eps
    if var > 0:
        x_next = x_next + math.sqrt(var) * noise
    return x_next


def _inpaint(x: torch.Tensor, prefix: torch.Tensor | None, ab: float,
             eps: torch.Tensor) -> torch.Tensor:
    if prefix is None:
        return x
    p = prefix.shape[1]
    return torch.cat([q_sample(prefix, ab, eps[:, :p]), x[:, p:]], dim=1)


def _sample(model_fn: ModelFn, x_T: torch.Tensor, timesteps: Steps, cond: Any,
            callback: Callback | None, prefix: torch.Tensor | None, eta: float,
            noise: torch.Tensor | None) -> torch.Tensor:
    x = x_T
    x0 = x_T
    for i, t in enumerate(timesteps.t):
        ab, ab_next = timesteps.alpha_bar[i], timesteps.next_alpha_bar(i)
        x = _inpaint(x, prefix, ab, x_T)
        x0 = model_fn(x, t, cond)
        if ab_next < 1.0:
            x = ddim_step(x, x0, ab, ab_next, eta, None if noise is None else noise[i])
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    if prefix is not None:
        x0 = torch.cat([prefix, x0[:, prefix.shape[1]:]], dim=1)
    return x0


@torch.no_grad()
def sample_ddim(model_fn: ModelFn, x_T: torch.Tensor, timesteps: Steps, cond: Any,
                callback: Callback | None = None,
                prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic DDIM (eta = 0): x_T (B, T, K) standard noise -> x0 (B, T, K)."""
    return _sample(model_fn, x_T, timesteps, cond, callback, prefix, 0.0, None)


@torch.no_grad()
def sample_ddpm(model_fn: ModelFn, x_T: torch.Tensor, timesteps: Steps, cond: Any,
                callback: Callback | None = None, prefix: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral sampling (eta = 1). ``noise`` (S, B, T, K): the fresh noise of each step (the last
    step adds none); drawn with torch.randn when None."""
    if noise is None:
        noise = torch.randn((len(timesteps),) + tuple(x_T.shape), dtype=x_T.dtype,
                            device=x_T.device)
    return _sample(model_fn, x_T, timesteps, cond, callback, prefix, 1.0, noise)


def frame_noise(rng: np.random.Generator, n_frames: int, n_coeffs: int) -> np.ndarray:
    """The stream noise rule: (n_frames, K) float32 standard normals drawn in frame order, so that
    noise depends only on (seed, frame index); drawing per hop equals drawing all at once."""
    return rng.standard_normal((n_frames, n_coeffs)).astype(np.float32)


def noise_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Per-stream generators: one for x_T (DDIM and DDPM), one for DDPM's per-step noise, which
    draws (n_frames, S, K) per hop in frame order (same invariance)."""
    return (np.random.Generator(np.random.PCG64(seed)),
            np.random.Generator(np.random.PCG64([seed, 1])))
