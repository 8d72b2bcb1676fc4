"""The one linear motion basis: vertices = template + coefficients . vectors (DESIGN §5).

For the facecap and procedural heads the vectors are the 51 ARKit blendshape deltas and the
coefficients are blendshape weights (``kind="arkit"``); for vertex datasets (VOCASET, BIWI) they are
a PCA basis fitted on the training offsets (``kind="pca"``), and every subject keeps its own
template: pass it as ``template=`` to :meth:`MotionBasis.decode` / :meth:`MotionBasis.encode`.

The dataset, training, the model (inside its checkpoint) and the server all use this one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.errors import DataError

__all__ = ["KINDS", "MotionBasis"]

KINDS = ("arkit", "pca")


@dataclass(frozen=True, eq=False)
class MotionBasis:
    """A template mesh and K offset vectors; arrays are read-only by convention."""

    template: np.ndarray  # (V, 3) float32, metres: the neutral face under the motion
    vectors: np.ndarray  # (K, V, 3) float32, metres per unit coefficient
    names: tuple[str, ...]  # (K,) ARKit blendshape names, or "pc0".."pcK-1"
    faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))  # (F, 3) int32
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (V,) bool vertex mask
    fps: float = 30.0  # frame rate of the motion: frame k depicts t = k / fps
    kind: str = "arkit"  # "arkit" (blendshape weights) or "pca"

    def __post_init__(self) -> None:
        K, V = len(self.names), self.template.shape[0]
        if self.template.shape != (V, 3) or self.vectors.shape != (K, V, 3):
            raise DataError(f"motion basis shapes disagree: template {self.template.shape}, "
                            f"vectors {self.vectors.shape}, {K} names")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise DataError(f"faces must be (F, 3) triangles, got {self.faces.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            raise DataError(f"faces index vertices outside 0..{V - 1}")
        for name, m in self.masks.items():
            if m.shape != (V,):
                raise DataError(f"vertex mask {name!r} has shape {m.shape}, expected ({V},)")
        if self.kind not in KINDS:
            raise DataError(f"unknown basis kind {self.kind!r}: use one of {KINDS}")

    @property
    def size(self) -> int:
        """K, the number of coefficients."""
        return len(self.names)

    @property
    def vertex_count(self) -> int:
        return int(self.template.shape[0])

    def require_masks(self, *names: str) -> None:
        """DataError unless every named vertex mask is present (training and metrics need
        "lip" and "upper_face")."""
        missing = [n for n in names if n not in self.masks]
        if missing:
            raise DataError(f"motion basis lacks the vertex mask(s) {missing}; have "
                            f"{sorted(self.masks)}")

    def decode(self, coeffs: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
        """(..., K) coefficients -> (..., V, 3) float32 vertices; ``template`` (V, 3) puts
        another subject's neutral face under the motion."""
        c = np.asarray(coeffs, np.float32)
        base = self.template if template is None else np.asarray(template, np.float32)
        flat = c @ self.vectors.reshape(self.size, -1)  # (..., V*3)
        return (flat.reshape(*c.shape[:-1], self.vertex_count, 3) + base).astype(np.float32)

    def encode(self, vertices: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
        """(T, V, 3) vertices -> (T, K) float32 least-squares coefficients, as offsets from
        ``template`` (default: the basis's own; pass the subject's for vertex datasets)."""
        base = self.template if template is None else template
        off = (np.asarray(vertices, np.float64) - base).reshape(len(vertices), -1)  # (T, V*3)
        return (off @ self._pinv()).astype(np.float32)

    def _pinv(self) -> np.ndarray:  # (V*3, K), cached on the frozen instance
        cached = self.__dict__.get("_pinv_cache")
        if cached is None:
            cached = np.linalg.pinv(self.vectors.reshape(self.size, -1).astype(np.float64))
            object.__setattr__(self, "_pinv_cache", cached)
        return cached

    @staticmethod
    def fit_pca(offsets: np.ndarray, k: int, template: np.ndarray,
                masks: dict[str, np.ndarray] | None = None, faces: np.ndarray | None = None,
                fps: float = 30.0) -> MotionBasis:
        """PCA basis of (N, V, 3) offsets from their subjects' templates; uncentred, so that
        vertices = template + vectors . c holds exactly for the best c (the first component
        carries the mean offset)."""
        x = np.asarray(offsets, np.float64).reshape(len(offsets), -1)  # (N, V*3)
        k = int(min(k, *x.shape))
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        vectors = vt[:k].reshape(k, -1, 3).astype(np.float32)
        return MotionBasis(
            np.asarray(template, np.float32).reshape(-1, 3), vectors,
            tuple(f"pc{i}" for i in range(k)),
            np.zeros((0, 3), np.int32) if faces is None else np.asarray(faces, np.int32),
            {n: np.asarray(m, bool) for n, m in (masks or {}).items()}, fps, "pca")
