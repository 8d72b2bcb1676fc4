"""Audio encoder: stacked log-mel frames at 30 fps -> one audio feature per motion frame.

Trained from scratch (no pretrained speech encoders are reachable, DESIGN §3). It is a stack of
*valid* (unpadded) dilated causal 1-D convolutions over motion frames, so its receptive field is
bounded and known:

    receptive_field = (left, right) = (R - lookahead, lookahead) motion frames,
    R = sum((kernel_size - 1) * dilation)  (default 2 * (1+2+4+8) = 30 frames = 1 s),

i.e. the feature of frame k depends on input frames [k - left, k + right] only. ``right`` is the
look-ahead (default 3 frames = 100 ms): it is the only future audio the whole model ever sees, and
the stream must wait for it (DESIGN §6 latency floor). Because the convolutions are unpadded, the
caller passes R frames of context before the frames it wants and gets exactly those frames back:
offline, training and streaming compute identical numbers (silence before the session start comes
from the features, not from zero padding inside the network).

Streaming (``init_cache`` / ``forward_stream``) keeps, per block, the last ``cut`` frames of that
block's input, so a hop costs its new frames only. Stack position p is input frame p; the output of
position p is the audio feature of frame p - lookahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class AudioEncoderConfig:
    input_dim: int = 0  # wired by TalkerConfig.build: FeatureConfig.feature_dim (0: not yet)
    d_model: int = 128  # width of the conv stack and of the output feature
    kernel_size: int = 3  # with the dilations: R = 2 * (1+2+4+8) = 30 frames = 1 s of reach
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # doubling: 1 s of history in 4 cheap layers
    # 100 ms of future audio: coarticulation anticipates ~100 ms. Part of the stream's latency
    # floor (DESIGN §6): the server must wait for these frames.
    lookahead_frames: int = 3
    dropout: float = 0.1  # inside each block, training only: the encoder learns from scratch

    @property
    def context_frames(self) -> int:
        """R: input frames needed before the first output frame's causal position."""
        return sum((self.kernel_size - 1) * d for d in self.dilations)

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left, right) in motion frames: frame k sees input frames [k - left, k + right]."""
        return self.context_frames - self.lookahead_frames, self.lookahead_frames


class CausalConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm, valid dilated conv, GELU, pointwise; cropped skip.

    The conv's weights live in an ``nn.Conv1d``, but it is computed as one matmul over the
    ``kernel_size`` shifted views of the sequence, concatenated along channels: the same numbers,
    and 2.7-3.1x faster on CPU at the streaming shape (3 frames of 32 streams: dilation 1
    394 -> 146 us, dilation 8 458 -> 147 us a block), where torch's dilated conv takes a slow
    path; also faster for whole windows (1 stream x 46 frames, dilation 8: 350 -> 95 us).
    """

    def __init__(self, d: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel_size, dilation=dilation)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)
        self.cut = (kernel_size - 1) * dilation  # frames the valid conv consumes

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, N - cut, d)
        x = self.norm(h)
        n, (k, dil) = h.shape[1] - self.cut, (self.conv.kernel_size[0], self.conv.dilation[0])
        taps = torch.cat([x[:, i * dil: i * dil + n] for i in range(k)], dim=-1)  # (B, n, k*d)
        w = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)  # (d, k*d)
        y = F.linear(taps, w, self.conv.bias)  # (B, N - cut, d)
        return h[:, self.cut:] + self.drop(self.proj(F.gelu(y)))


class AudioEncoder(nn.Module):
    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        if config.context_frames < config.lookahead_frames:
            raise ValueError("the conv stack's reach must cover the look-ahead")
        if config.input_dim < 1:
            raise ValueError("AudioEncoderConfig.input_dim is not wired: use TalkerConfig.build")
        self.config = config
        self.inp = nn.Linear(config.input_dim, config.d_model)
        self.blocks = nn.ModuleList(
            CausalConvBlock(config.d_model, config.kernel_size, d, config.dropout)
            for d in config.dilations)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, R + T, input_dim) features of frames [k0 - left, k0 + T + right) -> (B, T, d_model)
        audio features of frames [k0, k0 + T)."""
        h = self.inp(features)  # (B, R + T, d)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)  # (B, T, d)

    def init_cache(self, silence: torch.Tensor) -> list[torch.Tensor]:
        """Per-block input caches before the session: (cut_i, d) each. ``silence`` (F,) is the
        feature of a frame before the start; every block input there is a constant."""
        h = self.inp(silence.expand(1, self.config.context_frames + 1, -1))  # (1, R + 1, d)
        caches = []
        for block in self.blocks:
            caches.append(h[0, h.shape[1] - block.cut:])
            h = block(h)
        return caches

    def forward_stream(self, features: torch.Tensor, caches: list[torch.Tensor],
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, n, F) features of the next n stack positions, caches [(B, cut_i, d)] ->
        ((B, n, d) outputs of those positions, updated caches)."""
        h = self.inp(features)  # (B, n, d)
        new = []
        for block, cache in zip(self.blocks, caches, strict=True):
            full = torch.cat([cache, h], dim=1)  # (B, cut + n, d)
            new.append(full[:, full.shape[1] - block.cut:])
            h = block(full)  # (B, n, d)
        return self.norm(h), new
