"""The model contract: what a server needs to know about a model, read from its checkpoint.

The real-time side never guesses a rate, a frame rate, a look-ahead or a mesh: it reads them here
(``Talker.contract``), so a checkpoint with a shorter look-ahead or another face just works.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.face.basis import MotionBasis

__all__ = ["ModelContract"]


@dataclass(frozen=True, eq=False)
class ModelContract:
    sample_rate_hz: int  # the audio rate the model hears; the server resamples every input to it
    fps: int  # motion frames per second: frame k depicts audio time k / fps
    # Audio past a frame's own time that the model needs before it can generate the frame
    # (the audio encoder's look-ahead plus the feature window): part of the latency floor.
    lookahead_s: float
    identities: tuple[str, ...]  # the learned talking styles, in bank order
    identity_pick_s: float  # audio heard before identity "auto" picks the nearest style
    basis: MotionBasis  # template, vectors, names, masks, faces: vertices = template + c . vectors
