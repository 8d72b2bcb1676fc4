"""A tiny synthetic talking-face dataset with the real dataset API, for tests and smoke runs.

Tone bursts whose loudness envelope drives the first coefficient ("jaw"), scaled by a per-talker
gain, plus a per-talker constant on the second ("smile"); the others stay near zero. Each talker has
its own template (a small per-subject offset of one face), as in VOCASET, so the per-subject code
paths run in every toy training.
"""

from __future__ import annotations

import numpy as np

from models.data.dataset import TalkingFaceDataset, Utterance
from models.face.basis import MotionBasis

__all__ = ["toy_dataset"]

SAMPLE_RATE_HZ = 16000
FPS = 30


def toy_dataset(n_talkers: int = 2, n_utterances: int = 4, seconds: float = 1.5,
                n_coeffs: int = 5, n_vertices: int = 24, seed: int = 0) -> TalkingFaceDataset:
    """``n_talkers`` training talkers ("toy0".."), ``n_utterances`` each, the last one of each
    in the "val" split; a random basis with "lip" and "upper_face" masks."""
    rng = np.random.default_rng(seed)
    V = n_vertices
    masks = {"lip": np.arange(V) < V // 4, "upper_face": np.arange(V) >= V // 2}
    faces = np.array([[i, (i + 1) % V, (i + 2) % V] for i in range(V)], np.int32)
    basis = MotionBasis(rng.normal(size=(V, 3)).astype(np.float32),
                        (rng.normal(size=(n_coeffs, V, 3)) * 0.01).astype(np.float32),
                        tuple(f"c{i}" for i in range(n_coeffs)), faces, masks, FPS, "arkit")
    talkers = [f"toy{i}" for i in range(n_talkers)]
    utts = []
    for ti, name in enumerate(talkers):
        template = basis.template + (rng.normal(size=(V, 3)) * 0.002).astype(np.float32)
        for j in range(n_utterances):
            split = "val" if j == n_utterances - 1 else "train"
            audio, w = _utterance(rng, ti, seconds, n_coeffs)
            utts.append(Utterance(f"{name}_{j}", name, split, audio,
                                  basis.decode(w, template), template, w, FPS))
    return TalkingFaceDataset(utts, talkers, basis, FPS)


def _utterance(rng: np.random.Generator, ti: int, seconds: float, K: int,
               ) -> tuple[np.ndarray, np.ndarray]:
    n = int(seconds * SAMPLE_RATE_HZ)
    T = -(-n * FPS // SAMPLE_RATE_HZ)
    env_frames = np.clip(np.convolve(rng.random(T) > 0.6, np.ones(4) / 4, "same"), 0, 1)
    env = np.interp(np.arange(n) / SAMPLE_RATE_HZ * FPS, np.arange(T), env_frames)
    tone = np.sin(2 * np.pi * (150 + 60 * ti) * np.arange(n) / SAMPLE_RATE_HZ)
    audio = (0.3 * env * tone + 0.003 * rng.standard_normal(n)).astype(np.float32)
    w = np.zeros((T, K), np.float32)
    w[:, 0] = (0.5 + 0.5 * ti) * env_frames
    w[:, 1] = 0.2 * ti
    return audio, w
