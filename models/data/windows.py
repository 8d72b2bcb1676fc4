"""Training windows: utterances as clips (audio, coefficient targets, subject template) and the
random windows, with the exact audio context the encoder needs around them, that training cuts.

Windows are cut here (not by the dataset readers) because the audio encoder needs its exact
context around them; augmentation (``augment.py``) runs on a crop around each window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.corpus.phonemes import Phone
from models.data.augment import AugmentConfig, augment
from models.data.dataset import TalkingFaceDataset
from models.errors import DataError
from models.net.features import FeatureConfig, frame_features
from models.net.talker import TrainBatch

__all__ = ["Clip", "WindowSampler", "coeff_stats", "load_clips"]


@dataclass
class Clip:
    """One utterance ready for training: audio, coefficient target, bank index."""

    id: str
    audio: np.ndarray  # (N,) float32 16 kHz
    coeffs: np.ndarray  # (T, K) float32, offsets from ``template`` in the dataset's basis
    vertices: np.ndarray  # (T, V, 3) ground truth, for metrics
    template: np.ndarray  # (V, 3) the subject's own neutral face, under ``coeffs``
    talker: str
    index: int  # bank index, -1 for talkers outside the bank
    phones: tuple[Phone, ...] = ()  # timed phones, when the corpus has them


def load_clips(dataset: TalkingFaceDataset, split: str,
               identities: tuple[str, ...] | None = None) -> list[Clip]:
    """Utterances of a split with coefficient targets: the corpus's weights, or the vertices
    encoded against each utterance's own subject template (``TalkingFaceDataset.coeffs``)."""
    clips = []
    for u in dataset.utterances(split):
        idx = identities.index(u.talker) if identities and u.talker in identities else -1
        clips.append(Clip(str(u.id), np.asarray(u.audio, np.float32), dataset.coeffs(u),
                          np.asarray(u.vertices, np.float32), np.asarray(u.template, np.float32),
                          str(u.talker), idx, u.phones))
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
            raise DataError("no training utterances with a known talker")
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
