"""The face rig: a template mesh plus a linear basis of ARKit blendshape deltas.

vertices = template + sum_k weights[k] * deltas[k]   (DESIGN §5)

Two sources share this one API:
- ``facecap``: the real ARKit-rigged head shipped in the ``openfacefx`` wheel, decoded once at setup
  into ``assets/facecap.npz`` (see ``models.face.facecap``).
- ``procedural``: a head built from formulas, with its own jaw/lip/brow/eye deformations, so the
  project never depends on the downloaded mesh alone.

Units are metres, y up, the face looking +z, the subject's left at +x. Masks are boolean vertex
masks; ``lip`` and ``upper_face`` are always present (see ``derive_masks`` for how they are made).

``models.face.load.load_rig(name)`` is the one way to get a rig: ``"facecap"``, ``"procedural"`` or
``"auto"``; this module imports neither source, so they can both build on it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import DataError
from models.face.basis import MotionBasis

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
    # (upper lip centre, lower lip centre) vertex indices; see ``find_mouth_open_pair``.
    mouth_open: tuple[int, int] = (0, 0)

    @property
    def vertex_count(self) -> int:
        return int(self.template.shape[0])

    @property
    def basis(self) -> MotionBasis:
        """The rig as the one motion basis (ARKit weights as coefficients, 30 fps motion)."""
        cached = self.__dict__.get("_basis")
        if cached is None:
            cached = MotionBasis(self.template, self.deltas, self.blendshape_names,
                                 self.faces.astype(np.int32), dict(self.masks), kind="arkit")
            object.__setattr__(self, "_basis", cached)
        return cached

    def vertices(self, weights: np.ndarray) -> np.ndarray:
        """(T, K) or (K,) blendshape weights -> (T, V, 3) or (V, 3) float32 vertex positions."""
        return self.basis.decode(weights)

    def mouth_opening(self, vertices: np.ndarray) -> np.ndarray:
        """(..., V, 3) vertices -> (...) metres between the two ``mouth_open`` vertices."""
        upper, lower = self.mouth_open
        v = np.asarray(vertices)
        return np.linalg.norm(v[..., upper, :] - v[..., lower, :], axis=-1)

    def weight_index(self, name: str) -> int:
        """Position of blendshape ``name`` in ``blendshape_names`` (KeyError if absent)."""
        try:
            return self.blendshape_names.index(name)
        except ValueError:
            raise KeyError(name) from None


# ---- masks and landmarks ------------------------------------------------------------------------
# Semi-axes (x, y, z) in metres of the ellipsoid around the mouth centre that bounds the lip region:
# human lips plus the skin they drag (philtrum, the fold under the lower lip) fit in about 7 cm x
# 4.4 cm; wider would pull in cheeks that mouthLeft/Right and smiles also move.
LIP_ELLIPSOID_M = (0.035, 0.022, 0.030)
# A vertex belongs to a blendshape's support when it moves at least this fraction of that shape's
# largest displacement. Per-shape normalisation keeps one big shape (mouthClose, jawOpen) from
# hiding the small ones (mouthRollUpper).
LIP_SUPPORT_FRACTION = 0.3
UPPER_SUPPORT_FRACTION = 0.1
# The upper face starts this far above the mouth centre, so it never touches the lips or chin.
UPPER_FACE_MIN_ABOVE_MOUTH_M = 0.02
# Half-width of the mid-sagittal strip in which the mouth_open vertices are looked for.
MIDLINE_HALF_WIDTH_M = 0.003


def _support(deltas: np.ndarray, names: tuple[str, ...], prefixes: tuple[str, ...]) -> np.ndarray:
    """(V,) max over the shapes named ``prefix*`` of |delta| / (that shape's max |delta|)."""
    mag = np.linalg.norm(deltas, axis=-1)  # (K, V)
    rows = [k for k, n in enumerate(names) if n.startswith(prefixes) and mag[k].max() > 0]
    if not rows:
        return np.zeros(deltas.shape[1])
    return (mag[rows] / mag[rows].max(axis=1, keepdims=True)).max(axis=0)


def find_mouth_open_pair(
    template: np.ndarray, deltas: np.ndarray, names: tuple[str, ...]
) -> tuple[int, int]:
    """(upper lip centre, lower lip centre) vertex indices, for measuring how open the mouth is.

    The mid-sagittal plane x = xm is the mean x of the lip vertices weighted by how far
    mouthUpperUp{Left,Right} and mouthLowerDown{Left,Right} move them. Within 3 mm of it, the upper
    lip centre is the vertex that mouthUpperUpLeft + mouthUpperUpRight raise the most (+y), and the
    lower lip centre the vertex that mouthLowerDownLeft + mouthLowerDownRight lower the most (-y).
    These shapes move the lip edges by definition, so the pair sits on the lip line: their distance
    is ~0 at rest and grows with jawOpen.
    """
    idx = {n: k for k, n in enumerate(names)}
    up = deltas[idx["mouthUpperUpLeft"]] + deltas[idx["mouthUpperUpRight"]]  # (V, 3)
    down = deltas[idx["mouthLowerDownLeft"]] + deltas[idx["mouthLowerDownRight"]]
    weight = np.abs(up[:, 1]) + np.abs(down[:, 1])
    if weight.sum() <= 0:
        raise DataError("mouthUpperUp*/mouthLowerDown* are empty: cannot find the lip centres")
    xm = np.average(template[:, 0], weights=weight)
    strip = np.flatnonzero(np.abs(template[:, 0] - xm) < MIDLINE_HALF_WIDTH_M)
    if strip.size == 0:
        raise DataError("no vertices on the mid-sagittal plane of the mouth")
    upper = int(strip[np.argmax(up[strip, 1])])
    lower = int(strip[np.argmax(-down[strip, 1])])
    return upper, lower


def derive_masks(
    template: np.ndarray, deltas: np.ndarray, names: tuple[str, ...], mouth_open: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Vertex masks from the blendshape deltas; the same rule for every rig.

    Support of a shape family = per vertex, the max over its shapes of |delta| divided by that
    shape's own max |delta| (so every shape counts, whatever its amplitude).

    - ``lip``: support of ``mouth*`` >= 0.3, inside the ellipsoid ``LIP_ELLIPSOID_M`` (3.5 x 2.2 x
      3 cm semi-axes) around the mouth centre (the midpoint of the ``mouth_open`` pair), minus the
      chin: vertices below the mouth centre by more than 1 cm that jawOpen moves (relatively) more
      than any mouth shape. A few hundred vertices around the lips on facecap.
    - ``upper_face``: support of ``brow*`` / ``eye*`` >= 0.1 (forehead, brows, eyelids, the skin
      around the eyes), at least 2 cm above the mouth centre, minus ``lip`` (so they are disjoint).
    - ``jaw``: support of ``jawOpen`` >= 0.2 minus ``lip`` (chin, jaw line, lower cheeks).
    - ``face``: vertices that any blendshape moves by >= 0.1 mm (the animated part of the mesh).
    """
    centre = 0.5 * (template[mouth_open[0]] + template[mouth_open[1]])
    rel = (template - centre) / np.asarray(LIP_ELLIPSOID_M)
    near_mouth = (rel**2).sum(axis=1) < 1.0
    mouth = _support(deltas, names, ("mouth",))
    jaw = _support(deltas, names, ("jawOpen",))
    below = template[:, 1] < centre[1] - 0.01
    lip = (mouth >= LIP_SUPPORT_FRACTION) & near_mouth & ~((jaw > mouth) & below)
    upper = _support(deltas, names, ("brow", "eye"))
    upper_face = (
        (upper >= UPPER_SUPPORT_FRACTION)
        & (template[:, 1] > centre[1] + UPPER_FACE_MIN_ABOVE_MOUTH_M)
        & ~lip
    )
    moved = np.linalg.norm(deltas, axis=-1).max(axis=0) >= 1e-4
    return {
        "lip": lip,
        "upper_face": upper_face,
        "jaw": (jaw >= 0.2) & ~lip,
        "face": moved,
    }


# ---- the npz format ------------------------------------------------------------------------------
RIG_FORMAT_VERSION = 1
FIX_HINT = "re-run `python -m models.face.facecap fetch` (or `make setup`)"


def save_rig_npz(rig: FaceRig, path: Path) -> None:
    """Write ``rig`` to ``path`` (.npz, no pickles), atomically (write to a temp file, rename)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(RIG_FORMAT_VERSION, dtype=np.int32),
        "name": np.array(rig.name),
        "template": rig.template.astype(np.float32),
        "faces": rig.faces.astype(np.int32),
        "names": np.array(rig.blendshape_names),
        "deltas": rig.deltas.astype(np.float32),
        "capture_fps": np.array(rig.capture_fps, dtype=np.float64),
        "mouth_open": np.array(rig.mouth_open, dtype=np.int32),
        "mask_names": np.array(sorted(rig.masks)),
    }
    for k, m in rig.masks.items():
        arrays[f"mask_{k}"] = m.astype(bool)
    if rig.capture is not None:
        arrays["capture"] = rig.capture.astype(np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # numpy stub overload
    tmp.replace(path)


def load_rig_npz(path: Path) -> FaceRig:
    """Read and validate a rig npz; DataError (naming the file and the fix) if anything is off."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"rig file {path} is missing: {FIX_HINT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            rig = _rig_from_arrays({k: z[k] for k in z.files})
    except DataError as exc:
        raise DataError(f"rig file {path} is invalid ({exc}): {FIX_HINT}") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"rig file {path} is corrupt or truncated ({exc!r}): {FIX_HINT}") from exc
    return rig


def _rig_from_arrays(a: dict[str, np.ndarray]) -> FaceRig:
    if int(a["format_version"]) != RIG_FORMAT_VERSION:
        raise DataError(f"format version {int(a['format_version'])}, expected {RIG_FORMAT_VERSION}")
    template, faces, deltas = a["template"], a["faces"], a["deltas"]
    v = template.shape[0] if template.ndim == 2 else -1
    if template.shape != (v, 3) or v < 3 or not np.isfinite(template).all():
        raise DataError(f"template has shape {template.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= v:
        raise DataError("faces are not (F, 3) indices into the template")
    names = tuple(str(n) for n in a["names"])
    if names != RIG_NAMES:
        raise DataError("blendshape names differ from RIG_NAMES")
    if deltas.shape != (len(RIG_NAMES), v, 3) or not np.isfinite(deltas).all():
        raise DataError(f"deltas have shape {deltas.shape}")
    masks = {str(k): a[f"mask_{k}"].astype(bool) for k in a["mask_names"]}
    for k in ("lip", "upper_face"):
        if k not in masks or masks[k].shape != (v,) or not masks[k].any():
            raise DataError(f"mask {k!r} is missing or empty")
    capture = a.get("capture")
    if capture is not None and (capture.ndim != 2 or capture.shape[1] != len(ARKIT_NAMES)):
        raise DataError(f"capture has shape {capture.shape}")
    mouth_open = tuple(int(i) for i in a["mouth_open"])
    if len(mouth_open) != 2 or not all(0 <= i < v for i in mouth_open):
        raise DataError("mouth_open is not two vertex indices")
    return FaceRig(
        name=str(a["name"]),
        template=template.astype(np.float32),
        faces=faces.astype(np.int32),
        blendshape_names=names,
        deltas=deltas.astype(np.float32),
        masks=masks,
        capture=None if capture is None else capture.astype(np.float32),
        capture_fps=float(a["capture_fps"]),
        mouth_open=(mouth_open[0], mouth_open[1]),
    )
