"""Log-mel audio features at the motion frame rate, computed with torch only.

Timing rule (DESIGN §6: frame k depicts audio time k / fps):
- mel frame j is *centred* on sample j * hop: it covers samples [j*hop - win/2, j*hop + win/2);
  samples outside the audio (before the session or after its end) are silence (zeros);
- motion frame k uses the ``stack`` mel frames c(k) + (-1, 0, 1, 2) with c(k) = floor(k * 100 / 30),
  i.e. the 40 ms of mel frames around t_k, concatenated into one (stack * n_mels,) vector.

Every mel frame depends only on its own 25 ms of audio, so features for any range of motion frames
can be computed from any buffer that holds the samples they need: offline, training windows and the
stream all call ``frame_features`` and get the same numbers. ``AudioBuffer`` is the streaming side.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from models.errors import ModelError


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate_hz: int = 16000  # the server resamples every input to this (DESIGN §6)
    window_samples: int = 400  # 25 ms analysis window: the usual speech trade-off time/frequency
    hop_samples: int = 160  # 10 ms: 100 mel frames/s, 3.33 per motion frame
    n_fft: int = 512  # the 400-sample window zero-padded to a power of two
    n_mels: int = 80
    f_min_hz: float = 20.0
    f_max_hz: float = 7600.0  # below Nyquist, so telephone-band and 16 kHz audio look alike up top
    log_floor: float = 1e-5  # log(max(power, floor)): silence maps to a constant, not -inf
    fps: int = 30  # motion frame rate
    stack: int = 4  # mel frames per motion frame: ceil(100/30), so no mel frame is skipped
    # Fixed affine normalisation (log power of speech at unit-ish amplitude spans about -11.5..+5):
    # keeps inputs near [-1.5, 1.5] without a data-dependent statistic in the checkpoint.
    norm_offset: float = 4.0
    norm_scale: float = 4.0

    @property
    def feature_dim(self) -> int:
        return self.stack * self.n_mels

    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate_hz / self.fps  # 533.33 at 16 kHz / 30 fps

    def n_frames(self, n_samples: int) -> int:
        """Motion frames for ``n_samples`` of audio: ceil(n_samples * fps / sample_rate)."""
        return -(-n_samples * self.fps // self.sample_rate_hz)

    def centre_mel(self, frame: int) -> int:
        """c(k) = floor(k * mel_rate / fps), exact in integers."""
        return frame * self.sample_rate_hz // (self.hop_samples * self.fps)

    @property
    def stack_offsets(self) -> range:
        return range(1 - self.stack // 2, self.stack - self.stack // 2 + 1)  # (-1, 0, 1, 2) for 4

    def samples_needed(self, frame: int) -> int:
        """Audio samples (from the session start) that must exist to compute frame ``frame``."""
        last_mel = self.centre_mel(frame) + self.stack_offsets[-1]
        return last_mel * self.hop_samples + self.window_samples // 2

    def last_computable_frame(self, n_samples: int) -> int:
        """Largest frame k with samples_needed(k) <= n_samples (may be negative)."""
        j = (n_samples - self.window_samples // 2) // self.hop_samples - self.stack_offsets[-1]
        # largest k with floor(k * sr / (hop*fps)) <= j
        return ((j + 1) * self.hop_samples * self.fps - 1) // self.sample_rate_hz


def check_audio(audio: np.ndarray, sample_rate_hz: int, config: FeatureConfig) -> np.ndarray:
    """Validate mono float audio and return it as contiguous float32. Raises ModelError."""
    if sample_rate_hz != config.sample_rate_hz:
        raise ModelError(f"audio must be {config.sample_rate_hz} Hz mono, got {sample_rate_hz} Hz "
                         "(resample first)")
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ModelError(f"audio must be a 1-D mono array, got shape {a.shape}")
    if a.size == 0:
        raise ModelError("audio is empty")
    if not np.issubdtype(a.dtype, np.floating):
        raise ModelError(f"audio must be float samples in [-1, 1], got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ModelError("audio contains NaN or infinite samples")
    return a


@lru_cache(maxsize=8)
def _mel_matrix(config: FeatureConfig) -> torch.Tensor:
    """(n_fft//2+1, n_mels) triangular HTK-mel filterbank."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(config.f_min_hz), hz_to_mel(config.f_max_hz),
                                  config.n_mels + 2))
    bins = np.linspace(0, config.sample_rate_hz / 2, config.n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return torch.from_numpy(tri.T.astype(np.float32))


@lru_cache(maxsize=8)
def _window(config: FeatureConfig) -> torch.Tensor:
    return torch.hann_window(config.window_samples, periodic=True)


def log_mel(frames: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """(M, window_samples) audio frames -> (M, n_mels) log mel power. Each row is independent."""
    spec = torch.fft.rfft(frames * _window(config), n=config.n_fft)  # (M, n_fft//2+1)
    power = spec.real.square() + spec.imag.square()
    return torch.log(torch.clamp(power @ _mel_matrix(config), min=config.log_floor))


def frame_features(audio: np.ndarray, first_frame: int, n_frames: int, config: FeatureConfig,
                   audio_offset: int = 0) -> torch.Tensor:
    """Features of motion frames [first_frame, first_frame + n_frames) -> (n, stack * n_mels).

    ``audio[i]`` is session sample ``audio_offset + i``; every sample outside the buffer counts as
    silence. The caller must make sure the buffer holds every sample the frames need (see
    ``FeatureConfig.samples_needed``); frames may be negative (before the session: silence).
    """
    return batch_frame_features([(audio, audio_offset, first_frame)], n_frames, config)[0]


def batch_frame_features(requests: list[tuple[np.ndarray, int, int]], n_frames: int,
                         config: FeatureConfig) -> torch.Tensor:
    """``frame_features`` of several buffers at once, one FFT for all: requests are
    (audio, audio_offset, first_frame) -> (len(requests), n_frames, stack * n_mels)."""
    if n_frames <= 0:
        return torch.zeros(len(requests), 0, config.feature_dim)
    frames, index, rows = [], [], 0
    for audio, offset, first in requests:
        seg_frames, idx = _mel_frames(audio, offset, first, n_frames, config)
        frames.append(seg_frames)
        index.append(idx + rows)
        rows += len(seg_frames)
    mel = log_mel(torch.cat(frames), config)  # (sum M, n_mels)
    stacked = mel[torch.stack(index)]  # (R, n, stack, n_mels)
    return (stacked.reshape(len(requests), n_frames, config.feature_dim) + config.norm_offset) \
        / config.norm_scale


def _mel_frames(audio: np.ndarray, audio_offset: int, first_frame: int, n_frames: int,
                config: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The (M, window) audio frames of the mel frames these motion frames use, and (n, stack)
    indices into them."""
    offs = config.stack_offsets
    j_lo = config.centre_mel(first_frame) + offs[0]
    j_hi = config.centre_mel(first_frame + n_frames - 1) + offs[-1]  # inclusive
    half, hop = config.window_samples // 2, config.hop_samples
    start, stop = j_lo * hop - half, j_hi * hop + half  # session samples [start, stop)
    seg = np.zeros(stop - start, dtype=np.float32)
    a0, a1 = max(start, audio_offset), min(stop, audio_offset + len(audio))
    if a1 > a0:
        seg[a0 - start:a1 - start] = audio[a0 - audio_offset:a1 - audio_offset]
    frames = torch.from_numpy(seg).unfold(0, config.window_samples, hop)  # (j_hi-j_lo+1, win)
    centres = torch.tensor([config.centre_mel(k) - j_lo
                            for k in range(first_frame, first_frame + n_frames)])
    return frames, centres[:, None] + torch.tensor(list(offs))[None, :]  # (M, win), (n, stack)


class AudioBuffer:
    """The audio of one stream that features still need; trims what no future frame will use.

    ``push`` appends samples; ``flush`` marks the end (later samples are silence);
    ``features(first, n)`` computes frames from the buffer; ``release(frame)`` drops samples that
    frames >= ``frame`` no longer need.
    """

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.offset = 0  # session index of self._audio[0]
        self._audio = np.zeros(0, dtype=np.float32)
        self.received = 0  # samples pushed so far
        self.flushed = False

    def push(self, samples: np.ndarray) -> None:
        if self.flushed:
            raise ModelError("push_audio after flush: the stream has ended")
        s = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(s).all():
            raise ModelError("audio contains NaN or infinite samples")
        self._audio = np.concatenate([self._audio, s])
        self.received += len(s)

    def flush(self) -> None:
        self.flushed = True

    def last_ready_frame(self) -> int:
        """Largest frame whose features can be computed now (look-ahead padded after flush)."""
        if self.flushed:
            return 1 << 40
        return self.config.last_computable_frame(self.received)

    def features(self, first_frame: int, n_frames: int) -> torch.Tensor:
        return batch_frame_features([self.request(first_frame, n_frames)], n_frames,
                                    self.config)[0]

    def request(self, first_frame: int, n_frames: int) -> tuple[np.ndarray, int, int]:
        """(audio, offset, first_frame) for ``batch_frame_features``; checks the audio is there."""
        if first_frame + n_frames - 1 > self.last_ready_frame():
            raise ModelError(f"frames up to {first_frame + n_frames - 1} need audio that has not "
                             "arrived yet (check frames_available)")
        return self._audio, self.offset, first_frame

    def release(self, frame: int) -> None:
        """Forget samples that no frame >= ``frame`` needs."""
        c = self.config
        first_sample = (c.centre_mel(frame) + c.stack_offsets[0]) * c.hop_samples \
            - c.window_samples // 2
        drop = min(max(0, first_sample - self.offset), len(self._audio))
        if drop:
            self._audio = self._audio[drop:].copy()
            self.offset += drop
