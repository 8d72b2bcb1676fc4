"""The face rig: a template mesh plus a linear basis of ARKit blendshape deltas.

vertices = template + sum_k weights[k] * deltas[k]   (DESIGN §5)

Two sources share this one API:
- ``facecap``: the real ARKit-rigged head shipped in the ``openfacefx`` wheel, decoded once at setup
  into ``assets/facecap.npz`` (see ``models.assets``).
- ``procedural``: a head built from formulas, with its own jaw/lip/brow/eye deformations, so the
  project never depends on the downloaded mesh alone.

Units are metres. Masks are boolean vertex masks; ``lip`` and ``upper_face`` are always present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The 52 ARKit blendshape names in Apple's documented order. The rig keeps the 51 non-empty ones
# (facecap's ``tongueOut`` target is empty), in this order.
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward",
    "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)
RIG_NAMES: tuple[str, ...] = tuple(n for n in ARKIT_NAMES if n != "tongueOut")


class RigError(RuntimeError):
    """The rig asset is missing or unreadable; the message says how to fix it."""


@dataclass(frozen=True)
class FaceRig:
    """A template mesh with a linear blendshape basis. Arrays are read-only by convention."""

    name: str  # "facecap" or "procedural"
    template: np.ndarray  # (V, 3) float32, metres
    faces: np.ndarray  # (F, 3) int32, triangle vertex indices
    blendshape_names: tuple[str, ...]  # (K,) == RIG_NAMES
    deltas: np.ndarray  # (K, V, 3) float32, metres per unit weight
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (V,) bool
    capture: np.ndarray | None = None  # (T, 52) real capture take of ARKIT_NAMES weights, or None
    capture_fps: float = 30.0

    @property
    def vertex_count(self) -> int:
        return int(self.template.shape[0])

    def vertices(self, weights: np.ndarray) -> np.ndarray:
        """(T, K) or (K,) blendshape weights -> (T, V, 3) or (V, 3) float32 vertex positions."""
        w = np.asarray(weights, dtype=np.float32)
        flat = self.deltas.reshape(len(self.blendshape_names), -1)  # (K, V*3)
        out = w @ flat + self.template.reshape(-1)
        return out.reshape(*w.shape[:-1], self.vertex_count, 3).astype(np.float32)
