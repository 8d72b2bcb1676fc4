"""The Talker: audio (16 kHz) + talking identity -> face motion coefficients, offline or streaming.

    audio --features.py--> stacked log-mels (30 fps) --AudioEncoder--> a[k]   (look-ahead 100 ms)
    identity name / "auto" / None --IdentityModel--> e (identity vector)
    x_T ~ N(0, I) --sampler(diffusion.py) over Denoiser(x_t, t, a, e)--> x0 (normalised coeffs)
    x0 * std + mean = coefficients c (T, K);  vertices = template + c @ basis

One class serves the teacher and the distilled students (another checkpoint, another grid).
``forward`` predicts, ``loss`` trains, ``generate`` and ``stream_step`` sample through the same
sampler functions; ``stream_step`` equals ``generate`` on the same audio and seed because the
denoiser is causal in frames and the stream keeps its GRU state per sampling step.

Classifier-free guidance on the audio (``TalkerConfig.guidance`` g, ``guided``): the model learns
an unconditional prediction by training with the null audio (zeros) sometimes
(``LossConfig.audio_dropout``); sampling with g != 1 runs each step on [audio; null audio] in one
call and uses x0_null + g (x0_audio - x0_null). The null branch is a recurrence of its own, so a
guided stream also keeps the null branch's GRU state per sampling step (``StreamState.gru_null``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.errors import ModelError, UserError
from models.face.basis import MotionBasis
from models.net.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.net.checkpoint import load_checkpoint, save_checkpoint
from models.net.contract import ModelContract
from models.net.denoiser import Denoiser, DenoiserConfig
from models.net.features import (
    AudioBuffer,
    FeatureConfig,
    batch_frame_features,
    check_audio,
    frame_features,
)
from models.net.identity import IdentityConfig, IdentityModel
from models.net.losses import LipGap, VertexGram, motion_losses
from models.sampling import (
    ScheduleConfig,
    Steps,
    cosine_alpha_bar,
    frame_noise,
    noise_generators,
    respace,
    sample_ddim,
    sample_ddpm,
)

__all__ = ["ModelSize", "LossConfig", "TalkerConfig", "TrainBatch",
           "StreamState", "Talker"]


# ----------------------------------------------------------------------------- configuration

OBJECTIVES = ("diffusion", "regression")


@dataclass(frozen=True)
class ModelSize:
    """The parts' own knobs, as a training preset picks them; each part's config declares their
    defaults. TalkerConfig.build wires in the sizes a part takes from elsewhere (the basis, the
    identity bank, the features, the other parts)."""

    encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)


@dataclass(frozen=True)
class LossConfig:
    rec: float = 1.0  # vertex MSE of x0
    lip: float = 1.0  # lip-vertex MSE: lips carry the speech, and LVE is what we report
    vel: float = 0.5  # velocity MSE: against jitter, which frame-wise MSE does not see
    contrastive: float = 0.1  # InfoNCE audio <-> identity
    identity_dropout: float = 0.1  # train with the mean identity sometimes: the unknown-talker case
    # Train with the null audio (zeros, see Talker.null_audio) sometimes: the unconditional
    # model that classifier-free guidance extrapolates away from. 0: no draw, runs unchanged.
    audio_dropout: float = 0.0
    # Lip-gap loss (``losses.lip_gap_loss``, mm^2): the opening between the lip centres, frames
    # where the truth's lips touch weighted 1 + gap_closed_boost. 0: off (needs an ARKit basis).
    gap: float = 0.0
    gap_closed_boost: float = 4.0


@dataclass(frozen=True)
class TalkerConfig:
    features: FeatureConfig
    encoder: AudioEncoderConfig
    denoiser: DenoiserConfig
    identity: IdentityConfig
    schedule: ScheduleConfig
    identities: tuple[str, ...]  # bank order: identity i is the i-th training talker
    coeff_names: tuple[str, ...]  # (K,) basis names (ARKit blendshapes or pca_0..)
    sampler: str = "ddim"  # "ddim" or "ddpm"; the default for generate/new_stream
    sampler_steps: int = 64  # 64 for the respaced teacher, 8 for the distilled student
    loss: LossConfig = field(default_factory=LossConfig)
    # Classifier-free guidance scale on the audio, the default for generate/new_stream: x0 =
    # x0_null + g (x0_audio - x0_null). 1: plain conditional sampling, one pass per step; any
    # other g doubles the batch. A student distilled from a guided teacher keeps 1 (distill.py).
    guidance: float = 1.0
    # "diffusion", or "regression": the deterministic baseline of the results table (same
    # network, trained and run as one step from x_T = 0 at the noisiest t: audio -> motion).
    objective: str = "diffusion"

    @staticmethod
    def build(size: ModelSize, coeff_names: tuple[str, ...], identities: tuple[str, ...],
              features: FeatureConfig | None = None, schedule: ScheduleConfig | None = None,
              **options: Any) -> TalkerConfig:
        """The config of a new model: ``size``'s parts wired to the basis names, the training
        talkers, the features and each other. ``options``: the other fields (sampler,
        sampler_steps, loss, objective); a regression model samples in one step."""
        fc, sc = features or FeatureConfig(), schedule or ScheduleConfig()
        encoder = dataclasses.replace(size.encoder, input_dim=fc.feature_dim)
        identity = dataclasses.replace(size.identity, n_identities=len(identities),
                                       audio_dim=encoder.d_model)
        denoiser = dataclasses.replace(size.denoiser, n_coeffs=len(coeff_names),
                                       audio_dim=encoder.d_model, identity_dim=identity.dim)
        config = TalkerConfig(features=fc, encoder=encoder, denoiser=denoiser, identity=identity,
                              schedule=sc, identities=tuple(identities),
                              coeff_names=tuple(coeff_names), **options)
        if config.objective not in OBJECTIVES:
            raise ModelError(f"unknown objective {config.objective!r}: use one of {OBJECTIVES}")
        if config.objective == "regression":
            return dataclasses.replace(config, sampler_steps=1)
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TalkerConfig:
        return _dataclass_from_dict(TalkerConfig, d)

    def replace(self, **changes: Any) -> TalkerConfig:
        return _dataclass_from_dict(TalkerConfig, {**self.to_dict(), **changes})


def _dataclass_from_dict(cls: Any, d: dict[str, Any]) -> Any:
    """Rebuild nested frozen dataclasses from JSON (lists back to tuples)."""
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v, hint = d[f.name], hints[f.name]
        if is_dataclass(hint):
            v = v if is_dataclass(v) else _dataclass_from_dict(hint, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


@dataclass
class TrainBatch:
    features: torch.Tensor  # (B, R + W, F) features of frames [s - left, s + W + right)
    coeffs: torch.Tensor  # (B, W, K) target coefficients (raw, not normalised)
    talker: torch.Tensor  # (B,) long bank index
    mask: torch.Tensor  # (B, W) bool: frame inside its utterance


@dataclass
class StreamState:
    """Everything one session needs between hops. Owned by the caller; not thread-safe."""

    seed: int
    steps: Steps
    sampler: str
    audio: AudioBuffer
    encoder_cache: list[torch.Tensor]  # per conv block (cut_i, A): its last inputs
    fed: int  # encoder input frames consumed so far (next_frame + right once started)
    gru: torch.Tensor  # (S, L, H) denoiser state after frame next_frame - 1, one per sampling step
    rng_x: np.random.Generator  # x_T noise, (n, K) per hop in frame order
    rng_step: np.random.Generator  # DDPM per-step noise, (n, S, K) per hop in frame order
    next_frame: int = 0  # frames emitted so far
    guidance: float = 1.0  # classifier-free guidance scale (TalkerConfig.guidance)
    # (S, L, H) the null-audio branch's own GRU states when guidance != 1 (it sees other inputs,
    # so it runs its own recurrence); None when unguided.
    gru_null: torch.Tensor | None = None


# ----------------------------------------------------------------------------- the model

class Talker(nn.Module):
    def __init__(self, config: TalkerConfig, basis: MotionBasis,
                 coeff_mean: np.ndarray | None = None, coeff_std: np.ndarray | None = None,
                 subjects: dict[str, np.ndarray] | None = None):
        """``basis``: the motion basis the coefficients live in (faces and masks included);
        ``subjects``: the training subjects' own templates (V, 3) by name, for vertex datasets
        where every subject has its own neutral face (see :meth:`vertices`)."""
        super().__init__()
        self.config = config
        self.basis = basis
        K = config.denoiser.n_coeffs
        if basis.size != K:
            raise ModelError(f"basis has {basis.size} coefficients, config {K}")
        if basis.fps != config.features.fps:
            raise ModelError(f"basis is at {basis.fps} fps, the features at {config.features.fps}")
        basis.require_masks("lip", "upper_face")
        self.subjects = {k: np.asarray(v, np.float32).reshape(-1, 3)
                         for k, v in (subjects or {}).items()}
        self.encoder = AudioEncoder(config.encoder)
        self.denoiser = Denoiser(config.denoiser)
        self.identity = IdentityModel(config.identity)
        # Diffusion runs on per-coefficient standardised motion (training-set statistics).
        mean = np.zeros(K, np.float32) if coeff_mean is None else coeff_mean
        std = np.ones(K, np.float32) if coeff_std is None else coeff_std
        self.register_buffer("coeff_mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("coeff_std", torch.as_tensor(std, dtype=torch.float32).clone())
        self.gram = VertexGram(torch.tensor(self.basis.vectors),  # a copy: bases may be read-only
                               torch.tensor(self.basis.masks["lip"]))
        self.lip_gap = _lip_gap(basis) if config.loss.gap > 0 else None
        self.alpha_bar = cosine_alpha_bar(config.schedule)  # (T,) float64, derived, not saved
        self._silence: list[torch.Tensor] = []  # see _silence_cache
        self._silence_key: tuple[Any, ...] | None = None

    # -- small helpers
    @property
    def identities(self) -> list[str]:
        return list(self.config.identities)

    @property
    def contract(self) -> ModelContract:
        """What a server needs to know about this model (rates, look-ahead, identities, mesh)."""
        fc = self.config.features
        return ModelContract(sample_rate_hz=fc.sample_rate_hz, fps=fc.fps,
                             lookahead_s=self.lookahead_samples() / fc.sample_rate_hz,
                             identities=tuple(self.config.identities),
                             identity_pick_s=self.config.identity.pick_s, basis=self.basis)

    def lookahead_samples(self) -> int:
        """Audio samples past frame k's first sample s(k) = k * rate // fps that generating
        frame k needs: the smallest L with samples_needed(k + right) <= s(k) + L + 1 for every
        k (the pattern repeats every fps frames; two periods are checked)."""
        fc, right = self.config.features, self.receptive_field[1]
        need = max(fc.samples_needed(k + right) - (k * fc.sample_rate_hz // fc.fps) - 1
                   for k in range(2 * fc.fps))
        return max(0, need)

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left, right) audio context of a frame in motion frames; right is the look-ahead."""
        return self.config.encoder.receptive_field

    def normalize(self, coeffs: torch.Tensor) -> torch.Tensor:
        return (coeffs - self.coeff_mean) / self.coeff_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.coeff_std + self.coeff_mean

    @property
    def device(self) -> torch.device:
        """Where the weights live (``model.to("cuda")``); inputs and stream states follow, and
        results come back as CPU NumPy arrays either way."""
        return self.coeff_mean.device

    @property
    def is_regression(self) -> bool:
        return self.config.objective == "regression"

    def steps(self, n_steps: int | None = None) -> Steps:
        """The sampling grid: ``n_steps`` (default the config's); a regression model has one."""
        if self.is_regression:
            return respace(self.alpha_bar, 1)
        return respace(self.alpha_bar, n_steps or self.config.sampler_steps)

    # -- prediction
    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int, audio: torch.Tensor,
                identity: torch.Tensor, state: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict normalised x0 (B, T, K) from x_t (B, T, K), step t, audio features (B, T, A)
        and identity (B, D) or (B, T, D); returns (x0_hat, GRU state after the last frame).
        ``cond``: ``Denoiser.condition`` of (audio, identity), when a sampler has it already."""
        return self.denoiser(x_t, t, audio, identity, state, cond=cond)

    @staticmethod
    def null_audio(audio: torch.Tensor) -> torch.Tensor:
        """The "no audio" condition of classifier-free guidance for encoded features (B, T, A):
        zeros, learnt through LossConfig.audio_dropout. No parameters, so every checkpoint
        (trained with it or not) loads as it is."""
        return torch.zeros_like(audio)

    def guided(self, x_t: torch.Tensor, t: torch.Tensor | int, audio: torch.Tensor,
               identity: torch.Tensor, guidance: float, state: torch.Tensor | None = None,
               cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with classifier-free guidance on the audio: one call on the doubled batch
        [conditional; null audio] (2B), x0 = x0_null + guidance (x0_cond - x0_null).
        state (L, 2B, H): the conditional rows, then the null rows; returned likewise.
        guidance == 1 is ``forward`` itself (batch B, state (L, B, H)). ``cond``: this batch's
        ``guided_condition``, computed once for all sampling steps."""
        if guidance == 1.0:
            return self(x_t, t, audio, identity, state, cond=cond)
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            t = torch.cat([t, t])
        if cond is None:
            cond = self.guided_condition(audio, identity, guidance)
        x0, state = self(torch.cat([x_t, x_t]), t, audio, identity, state, cond=cond)
        x0_cond, x0_null = x0.chunk(2)
        return x0_null + guidance * (x0_cond - x0_null), state

    def guided_condition(self, audio: torch.Tensor, identity: torch.Tensor,
                         guidance: float) -> torch.Tensor:
        """The step-independent input of ``guided``: (B, T, H), or (2B, T, H) with guidance."""
        if guidance == 1.0:
            return self.denoiser.condition(audio, identity)
        return self.denoiser.condition(torch.cat([audio, self.null_audio(audio)]),
                                       torch.cat([identity, identity]))

    def encode_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(B, R + T, F) -> (B, T, A); see AudioEncoder for the frame alignment."""
        return self.encoder(features)

    def offline_features(self, audio: np.ndarray) -> torch.Tensor:
        """Checked 16 kHz audio -> (R + T, F) encoder inputs for all its T frames."""
        left, right = self.receptive_field
        T = self.config.features.n_frames(len(audio))
        return frame_features(audio, -left, left + T + right, self.config.features)

    # -- training
    def motion_loss(self, pred: torch.Tensor, target: torch.Tensor,
                    mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Vertex-space losses of normalised predictions and targets (B, T, K)."""
        return motion_losses(self.denormalize(pred), self.denormalize(target), self.gram, mask,
                             self.lip_gap, self.config.loss.gap_closed_boost)

    def loss(self, batch: TrainBatch, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             ) -> dict[str, torch.Tensor]:
        """Training loss of one batch (diffusion, or the regression baseline):
        {"loss": weighted total, and each term}."""
        x0 = self.normalize(batch.coeffs)  # (B, W, K)
        B = x0.shape[0]
        if self.is_regression:  # one deterministic step: x_t = 0 at the noisiest t
            t = torch.full((B,), len(self.alpha_bar) - 1)
            x_t = torch.zeros_like(x0)
        else:
            if t is None:
                t = torch.randint(0, len(self.alpha_bar), (B,), generator=generator)
            if noise is None:
                noise = torch.randn(x0.shape, generator=generator)
            ab = self.alpha_bar[t].float()[:, None, None]  # (B, 1, 1)
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        audio = self.encode_audio(batch.features)  # (B, W, A)
        ident = self.identity.vectors(batch.talker)  # (B, D)
        drop = torch.rand(B, generator=generator) < self.config.loss.identity_dropout
        ident = torch.where(drop[:, None], self.identity.mean_identity()[None], ident)
        w = self.config.loss
        heard = audio
        if w.audio_dropout > 0:  # drawn only then: runs without it keep their random stream
            silent = torch.rand(B, generator=generator) < w.audio_dropout
            heard = torch.where(silent[:, None, None], self.null_audio(audio), audio)
        pred, _ = self(x_t, t, heard, ident)
        terms = self.motion_loss(pred, x0, batch.mask)
        # the identity's contrastive loss always hears the real audio
        terms["contrastive"] = self.identity.contrastive_loss(audio, batch.talker, batch.mask)
        terms["loss"] = (w.rec * terms["rec"] + w.lip * terms["lip"] + w.vel * terms["vel"]
                         + w.contrastive * terms["contrastive"])
        if "gap" in terms:
            terms["loss"] = terms["loss"] + w.gap * terms["gap"]
        return terms

    # -- identities
    def identity_index(self, name: str) -> int:
        if name not in self.config.identities:
            raise ModelError(f"unknown identity {name!r}; known: {', '.join(self.identities)}")
        return self.config.identities.index(name)

    @torch.no_grad()
    def pick_identity(self, audio_16k: np.ndarray, sample_rate_hz: int = 16000,
                      ) -> tuple[int, np.ndarray]:
        """Nearest training identity to a recording (use ~3 s): (index, (N,) cosine scores)."""
        audio = check_audio(audio_16k, sample_rate_hz, self.config.features)
        with self._eval():
            feats = self.encode_audio(self.offline_features(audio)[None].to(self.device))[0]
            index, scores = self.identity.pick(feats)  # feats (T, A)
        return index, scores.cpu().numpy()

    @torch.no_grad()
    def identity_vector(self, identity: str | None = None,
                        audio: np.ndarray | None = None) -> torch.Tensor:
        """(D,) conditioning vector on the CPU: a name, None (the mean identity) or "auto" (needs
        audio)."""
        if identity is None:
            return self.identity.mean_identity().detach().cpu().clone()
        if identity == "auto":
            if audio is None:
                raise ModelError('identity "auto" needs audio to pick from')
            return self.identity.bank.weight[self.pick_identity(audio)[0]].detach().cpu().clone()
        return self.identity.bank.weight[self.identity_index(identity)].detach().cpu().clone()

    # -- offline generation
    @torch.no_grad()
    def generate(self, audio_16k: np.ndarray, identity: str | None | torch.Tensor = None,
                 steps: int | None = None, seed: int = 0, sample_rate_hz: int = 16000,
                 sampler: str | None = None, guidance: float | None = None) -> np.ndarray:
        """Coefficients (T, K) float32 for mono 16 kHz float audio, T = ceil(len / 533.33).
        Uses the stream noise rule, so a stream with the same seed gives the same frames.
        ``guidance``: the classifier-free guidance scale (None: the config's)."""
        audio = check_audio(audio_16k, sample_rate_hz, self.config.features)
        ident = identity if isinstance(identity, torch.Tensor) else \
            self.identity_vector(identity, audio)
        state = self.new_stream(seed, steps, sampler, guidance)
        T = self.config.features.n_frames(len(audio))
        with self._eval():
            feats = self.offline_features(audio)[None].to(self.device)
            audio_feat = self.encode_audio(feats)  # (1, T, A)
            x0 = self._sample(state, audio_feat, ident[None].to(self.device), T, [state])
        return self.denormalize(x0)[0].cpu().numpy()

    # -- streaming
    def new_stream(self, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                   guidance: float | None = None) -> StreamState:
        """A fresh session; nothing is computed until audio arrives. ``guidance``: the
        classifier-free guidance scale (None: the config's); != 1 costs a doubled batch."""
        sampler = "ddim" if self.is_regression else sampler or self.config.sampler
        if sampler not in ("ddim", "ddpm"):
            raise ModelError(f"unknown sampler {sampler!r}: use 'ddim' or 'ddpm'")
        guidance = self.config.guidance if guidance is None else float(guidance)
        if not np.isfinite(guidance) or guidance < 0:
            raise ModelError(f"guidance must be a finite number >= 0, got {guidance}")
        grid = self.steps(steps)
        left, right = self.receptive_field
        buf = AudioBuffer(self.config.features)
        c = self.config.denoiser
        rng_x, rng_step = noise_generators(seed)
        cache = self._silence_cache(buf)

        def zeros() -> torch.Tensor:
            return torch.zeros(len(grid), c.n_layers, c.hidden, device=self.device)

        return StreamState(seed=seed, steps=grid, sampler=sampler, audio=buf,
                           encoder_cache=cache, fed=0, gru=zeros(), rng_x=rng_x,
                           rng_step=rng_step, guidance=guidance,
                           gru_null=None if guidance == 1.0 else zeros())

    def _silence_cache(self, buf: AudioBuffer) -> list[torch.Tensor]:
        """The encoder's caches before a session: the same for every stream (silence), so kept
        until an encoder weight changes (storage or version counter): many sessions starting at
        once would otherwise each run the encoder on silence (~1.5 ms a stream). Every stream
        gets its own copy."""
        key = (self.device, self.encoder.training, *(x for q in self.encoder.parameters()
                              for x in (q.data_ptr(), q._version)))
        if self._silence_key != key:
            silence = buf.features(-1, 1)[0].to(self.device)  # (F,) a frame before the start
            with torch.no_grad():
                self._silence = self.encoder.init_cache(silence)
            self._silence_key = key
        return [c.clone() for c in self._silence]

    def push_audio(self, state: StreamState, samples: np.ndarray) -> None:
        """Append mono float32 samples at the model's rate (any chunk size)."""
        state.audio.push(samples)

    def flush(self, state: StreamState) -> None:
        """End of stream: the look-ahead past the end is silence; every frame becomes available."""
        state.audio.flush()

    def frames_available(self, state: StreamState) -> int:
        """Frames that can be generated now: their look-ahead audio has arrived."""
        if state.audio.flushed:
            total = self.config.features.n_frames(state.audio.received)
        else:
            total = state.audio.last_ready_frame() - self.receptive_field[1] + 1
        return max(0, total - state.next_frame)

    @torch.no_grad()
    def stream_step(self, states: list[StreamState], n_frames: int,
                    identity_vectors: torch.Tensor | None = None) -> np.ndarray:
        """Generate the next ``n_frames`` of every stream in one batched pass over all sampling
        steps -> (B, n_frames, K) float32 coefficients. identity_vectors: (B, D), per frame
        (B, n, D), or None (mean identity). Every stream needs frames_available >= n_frames and
        the same sampler, steps and guidance."""
        if not states or n_frames <= 0:
            raise ModelError("stream_step needs at least one stream and one frame")
        first = states[0]
        for s in states:
            if (s.steps, s.sampler, s.guidance) != (first.steps, first.sampler, first.guidance):
                raise ModelError("streams batched together must share sampler, steps and "
                                 "guidance")
            if self.frames_available(s) < n_frames:
                raise ModelError(f"stream has {self.frames_available(s)} frames available, "
                                 f"{n_frames} asked (wait for audio or flush)")
        B = len(states)
        if identity_vectors is None:
            identity_vectors = self.identity.mean_identity()[None].expand(B, -1)
        if identity_vectors.shape[0] != B:
            raise ModelError(f"identity_vectors has {identity_vectors.shape[0]} rows "
                             f"for {B} streams")
        identity_vectors = identity_vectors.to(self.device)
        with self._eval():
            audio_feat = self._encode_next(states, n_frames)  # (B, n, A)
            x0 = self._sample(states[0], audio_feat, identity_vectors, n_frames, states)
        for s in states:
            s.next_frame += n_frames
            s.audio.release(s.fed)
        return self.denormalize(x0).cpu().numpy()

    def _encode_next(self, states: list[StreamState], n: int) -> torch.Tensor:
        """Audio features (B, n, A) of frames [next_frame, next_frame + n) of every stream: feeds
        input frames [next_frame + right, next_frame + n + right) through the cached encoder."""
        right = self.receptive_field[1]
        starting: dict[int, list[StreamState]] = {}  # once per stream: the first `right` frames,
        for s in states:  # whose outputs precede frame 0; new streams of a batch fed together
            if s.fed < right:
                starting.setdefault(right - s.fed, []).append(s)
        for missing, group in starting.items():
            self._feed(group, missing)
        return self._feed(states, n)

    def _feed(self, states: list[StreamState], n: int) -> torch.Tensor:
        feats = batch_frame_features([s.audio.request(s.fed, n) for s in states], n,
                                     self.config.features).to(self.device)  # (B, n, F)
        caches = [torch.stack(c) for c in zip(*(s.encoder_cache for s in states), strict=True)]
        out, caches = self.encoder.forward_stream(feats, caches)  # (B, n, A)
        for b, s in enumerate(states):
            s.encoder_cache = [c[b] for c in caches]
            s.fed += n
        return out

    def _sample(self, proto: StreamState, audio: torch.Tensor, identity: torch.Tensor,
                n: int, states: list[StreamState]) -> torch.Tensor:
        """Run the sampler over n new frames of B streams, advancing their noise and GRU states.
        audio (B, n, A); identity (B, D) or (B, n, D) -> normalised x0 (B, n, K). With guidance
        != 1 every step is one call on 2B rows (``guided``): the streams' states, then their
        null-branch states."""
        K, S, g = self.config.denoiser.n_coeffs, len(proto.steps), proto.guidance
        x_T = torch.stack([torch.from_numpy(frame_noise(s.rng_x, n, K))
                           for s in states]).to(self.device)
        if self.is_regression:
            x_T = torch.zeros_like(x_T)  # still drawn, so the noise stream stays per frame
        B = len(states)
        rows = [s.gru for s in states]
        if g != 1.0:
            rows += [s.gru_null if s.gru_null is not None else torch.zeros_like(s.gru)
                     for s in states]  # new_stream sets gru_null whenever guidance != 1
        gru = torch.stack(rows, dim=2)  # (S, L, B or 2B, H)
        new_gru = gru.clone()
        calls = [0]
        prepared = self.guided_condition(audio, identity, g)  # the same for all S steps

        def model_fn(x: torch.Tensor, t: int, cond: tuple) -> torch.Tensor:
            i = calls[0]  # the sampler calls once per step, in order: i picks the state
            x0, new_gru[i] = self.guided(x, t, cond[0], cond[1], g, gru[i], cond=prepared)
            calls[0] += 1
            return x0

        if proto.sampler == "ddim":
            x0 = sample_ddim(model_fn, x_T, proto.steps, (audio, identity))
        else:
            step_noise = np.stack([s.rng_step.standard_normal((n, S, K)) for s in states])
            noise = torch.from_numpy(step_noise.astype(np.float32)).permute(2, 0, 1, 3)
            noise = noise.to(self.device)
            x0 = sample_ddpm(model_fn, x_T, proto.steps, (audio, identity), noise=noise)
        for b, s in enumerate(states):
            s.gru = new_gru[:, :, b].clone()
            if g != 1.0:
                s.gru_null = new_gru[:, :, B + b].clone()
        return x0

    @contextlib.contextmanager
    def _eval(self):
        was = self.training
        if not was:  # the usual case when serving: walking every module costs ~1 ms a call
            yield
            return
        self.eval()
        try:
            yield
        finally:
            self.train(was)

    # -- vertices
    def vertices(self, coeffs: np.ndarray, subject: str | None = None) -> np.ndarray:
        """(..., K) coefficients -> (..., V, 3) float32 vertices through the stored basis, on
        the basis's template or on training subject ``subject``'s own neutral face."""
        if subject is None:
            return self.basis.decode(coeffs)
        if subject not in self.subjects:
            known = ", ".join(sorted(self.subjects)) or "none: this model has one template"
            raise ModelError(f"unknown subject {subject!r}; known: {known}")
        return self.basis.decode(coeffs, self.subjects[subject])

    # -- checkpoints
    def save(self, path: str | Path, extra_metadata: dict[str, Any] | None = None) -> Path:
        b = self.basis
        tensors = {f"model.{k}": v for k, v in self.state_dict().items()}
        tensors["rig.template"] = torch.from_numpy(b.template)
        tensors["rig.basis"] = torch.from_numpy(b.vectors)
        tensors["rig.faces"] = torch.from_numpy(np.asarray(b.faces, np.int32))
        for name, m in b.masks.items():
            tensors[f"rig.mask.{name}"] = torch.from_numpy(m.astype(np.uint8))
        for name, t in self.subjects.items():
            tensors[f"subject.{name}"] = torch.from_numpy(t)
        config = {"talker": self.config.to_dict(), "basis_names": list(b.names),
                  "basis_kind": b.kind, "basis_fps": b.fps}
        return save_checkpoint(path, tensors, config, extra_metadata)

    @staticmethod
    def from_checkpoint(path: str | Path) -> Talker:
        """Load a Talker from one .safetensors file (config, identities, basis inside)."""
        tensors, config, _ = load_checkpoint(path)
        try:
            cfg = TalkerConfig.from_dict(config["talker"])
            basis = MotionBasis(
                tensors["rig.template"].numpy(), tensors["rig.basis"].numpy(),
                tuple(config["basis_names"]), _faces(tensors, path),
                {k[len("rig.mask."):]: v.numpy().astype(bool)
                 for k, v in tensors.items() if k.startswith("rig.mask.")},
                float(config.get("basis_fps", cfg.features.fps)),
                config.get("basis_kind", "arkit"))
            subjects = {k[len("subject."):]: v.numpy() for k, v in tensors.items()
                        if k.startswith("subject.")}
            talker = Talker(cfg, basis, subjects=subjects)
            state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
            talker.load_state_dict(state, strict=True)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ModelError(f"checkpoint {path} does not match this code: {e}") from e
        talker.eval()
        return talker

    def describe(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return json.dumps({"params": n, "identities": len(self.identities),
                           "receptive_field": self.receptive_field,
                           "sampler": self.config.sampler, "steps": self.config.sampler_steps,
                           "guidance": self.config.guidance})


def _lip_gap(basis: MotionBasis) -> LipGap:
    """The lip-gap loss's linear map, from the lip centres the ARKit shapes define."""
    from models.face.rig import find_mouth_open_pair

    try:
        pair = find_mouth_open_pair(basis.template, basis.vectors, basis.names)
    except (KeyError, UserError) as e:
        raise ModelError(f"the lip-gap loss needs an ARKit basis with mouthUpperUp*/"
                         f"mouthLowerDown* ({basis.kind} basis: {e})") from None
    return LipGap(torch.tensor(basis.vectors), torch.tensor(basis.template), pair)


def _faces(tensors: dict[str, torch.Tensor], path: str | Path) -> np.ndarray:
    """The checkpoint's triangles. Checkpoints written before faces travelled inside them get
    the faces of the rig whose template they carry (checked vertex for vertex, not guessed from
    the vertex count); none matching is an error that says so."""
    if "rig.faces" in tensors:
        return tensors["rig.faces"].numpy().astype(np.int32)
    from models.face.load import load_rig

    template = tensors["rig.template"].numpy()
    for name in ("facecap", "procedural"):
        try:
            rig = load_rig(name)
        except UserError:  # this rig is not available here
            continue
        if rig.template.shape == template.shape and np.allclose(rig.template, template,
                                                                 atol=1e-6):
            return rig.faces.astype(np.int32)
    raise ModelError(f"checkpoint {path} carries no faces and its template matches no known rig; "
                     "re-save it with this version of the code")
