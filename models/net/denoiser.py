"""The denoiser: a GRU over motion frames that predicts the clean coefficients x0 of every frame.

Per frame k it reads [noisy coefficients x_t[k], audio feature a[k], timestep embedding, identity]
and carries a hidden state from frame k-1: it is *causal in motion*. All future context comes from
the audio encoder's bounded look-ahead. This is what makes streaming cheap and exact (DESIGN §6):
for every sampling step the stream keeps the GRU state after the last emitted frame, and the work of
a hop scales with its new frames only. Streaming equals offline because the offline sampler runs
the very same recurrence from frame 0.

The network knows nothing of schedules or samplers (STYLE habit 6): ``t`` is just an integer index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class DenoiserConfig:
    # Wired by TalkerConfig.build from the basis and the other parts (0: not yet):
    n_coeffs: int = 0  # K: MotionBasis.size (51 ARKit blendshapes of the facecap rig, or PCA)
    audio_dim: int = 0  # AudioEncoderConfig.d_model
    identity_dim: int = 0  # IdentityConfig.dim
    # The denoiser's own knobs:
    time_dim: int = 64  # sinusoidal timestep embedding width
    hidden: int = 256  # GRU width; the head also sees the frame's input (see forward)
    # One layer: 8 steps of a 1-s window in ~23 ms on one thread, two ~37 ms; one 256-wide layer
    # meets the 30-ms bar with room (models/README.md, "Why one GRU layer").
    n_layers: int = 1
    dropout: float = 0.0  # between GRU layers (none with one layer)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) integer steps -> (B, dim) sinusoidal embedding (Transformer positional style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Denoiser(nn.Module):
    def __init__(self, config: DenoiserConfig):
        super().__init__()
        if min(config.n_coeffs, config.audio_dim, config.identity_dim) < 1:
            raise ValueError("DenoiserConfig's sizes are not wired: use TalkerConfig.build")
        self.config = config
        c = config
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.time_dim), nn.SiLU(),
                                      nn.Linear(c.time_dim, c.time_dim))
        self.inp = nn.Linear(c.n_coeffs + c.audio_dim + c.time_dim + c.identity_dim, c.hidden)
        self.gru = nn.GRU(c.hidden, c.hidden, num_layers=c.n_layers, batch_first=True,
                          dropout=c.dropout if c.n_layers > 1 else 0.0)
        # The head also sees the per-frame input, so the GRU only has to carry temporal context.
        self.head = nn.Sequential(nn.Linear(2 * c.hidden, c.hidden), nn.GELU(),
                                  nn.Linear(c.hidden, c.n_coeffs))
        # (step, device) -> (weight versions, (1, 1, H) bias): see time_bias
        self._time_cache: dict[tuple[int, torch.device], tuple[tuple[int, ...], torch.Tensor]] = {}

    def init_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(self.config.n_layers, batch, self.config.hidden,
                           device=device)  # (L, B, H)

    def condition(self, audio: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """The input layer's share of what does not change across sampling steps: audio
        (B, T, audio_dim) and identity (B, identity_dim) or (B, T, identity_dim) -> (B, T, H),
        bias included. A sampler computes it once per window (or hop), not once per step."""
        c, w = self.config, self.inp.weight
        a0 = c.n_coeffs
        i0 = a0 + c.audio_dim + c.time_dim
        cond = F.linear(audio, w[:, a0:a0 + c.audio_dim], self.inp.bias)
        ident = F.linear(identity, w[:, i0:])  # (B, H) or (B, T, H)
        return cond + (ident[:, None] if identity.dim() == 2 else ident)

    def time_bias(self, t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        """The step's share of the input layer: (B, 1, H) from the timestep embedding. When no
        gradient is wanted and all rows share the step, it is kept per step until a weight it
        reads changes (their storage or version counter): a sampler's grid is a handful of
        steps, and this is ~a fifth of a one-stream step's ops."""
        c = self.config
        t = torch.as_tensor(t, device=device).reshape(-1)  # (1,) when all rows share the step
        cache = t.numel() == 1 and not self.training and not torch.is_grad_enabled()
        if cache:
            key = (int(t), device)
            version = tuple(x for p in self._time_params() for x in (p.data_ptr(), p._version))
            hit = self._time_cache.get(key)
            if hit is not None and hit[0] == version:
                return hit[1].expand(batch, 1, -1)
        temb = self.time_mlp(timestep_embedding(t, c.time_dim))  # (1 or B, time_dim)
        t0 = c.n_coeffs + c.audio_dim
        bias = F.linear(temb, self.inp.weight[:, t0:t0 + c.time_dim])[:, None]
        if cache:
            self._time_cache[key] = (version, bias)
        return bias.expand(batch, 1, -1)

    def _time_params(self) -> list[torch.Tensor]:
        return [*self.time_mlp.parameters(), self.inp.weight]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int, audio: torch.Tensor,
                identity: torch.Tensor, state: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict x0.

        x_t (B, T, K) noisy coefficients; t (B,) or int step index; audio (B, T, audio_dim);
        identity (B, identity_dim) or per frame (B, T, identity_dim); state (L, B, H) the GRU state
        after the frame before x_t[:, 0] (zeros at the sequence start); ``cond``: the
        ``condition(audio, identity)`` a sampler computed once for all its steps (then ``audio``
        and ``identity`` are not read).
        Returns x0_hat (B, T, K) and the state after the last frame (L, B, H).

        The input layer is one Linear over [x_t, audio, timestep embedding, identity], computed
        as the sum of its column blocks, so that the step-independent block can be reused.
        """
        B = x_t.shape[0]
        if cond is None:
            cond = self.condition(audio, identity)
        h_in = F.linear(x_t, self.inp.weight[:, :self.config.n_coeffs])
        h_in = F.gelu(h_in + cond + self.time_bias(t, B, x_t.device))  # (B, T, H)
        if state is None:
            state = self.init_state(B, x_t.device)
        h, state = self.gru(h_in, state)  # (B, T, H)
        return self.head(torch.cat([h, h_in], dim=-1)), state  # (B, T, K), (L, B, H)
