"""A procedural head with 51 ARKit blendshapes: the fallback when facecap.npz is absent.

The mesh is a closed latitude/longitude ellipsoid (head 23 cm tall, 15 cm wide, 19 cm deep; y up,
face looking +z, the subject's left at +x), with rows and columns packed towards the face, deformed
by a few smooth bumps (nose, brow ridge, eye sockets, lips, chin, a tapered jaw). A mouth slit is
cut along one grid row: its inner vertices are duplicated, the upper copies belong to the upper lip
and the lower copies to the lower lip, so the mouth can open.

Every blendshape is a smooth displacement field (metres per unit weight) over regions defined by
Gaussian falloffs around landmarks (``Landmarks``): jawOpen rotates the lower face about a hinge
axis near the ears, the mouth shapes move the lips and corners, brow/eye/cheek/nose shapes move
their regions. The eyeLook* shapes only nudge the eyelids (there are no eyeballs). Masks are
derived with ``models.face.rig.derive_masks``, the same rule as for facecap. Deterministic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from models.face.rig import RIG_NAMES, FaceRig, derive_masks, find_mouth_open_pair


@dataclass(frozen=True)
class HeadShape:
    """Size and tessellation of the base ellipsoid."""

    half_width_m: float = 0.075  # x semi-axis
    half_height_m: float = 0.115  # y semi-axis
    half_depth_m: float = 0.095  # z semi-axis, towards the face
    columns: int = 56  # around the head
    rows: int = 52  # between the poles (the poles are two extra vertices)
    # Rows and columns are packed around the face centre: sample density there is 1 + face_boost
    # times that at the back of the head, falling off as a Gaussian of the angles below. This puts
    # ~4 mm between vertices on the lips and eyes with under 3000 vertices in all.
    face_boost: float = 5.0
    face_centre_y_m: float = -0.015  # between the nose and the mouth
    face_polar_width_rad: float = 0.35
    face_azimuth_width_rad: float = 0.5


@dataclass(frozen=True)
class Landmarks:
    """Face landmarks (metres). x is half the distance between the paired features."""

    mouth_y: float = -0.048  # the slit is cut on the grid row nearest to this height
    mouth_half_width: float = 0.024
    eye_x: float = 0.032
    eye_y: float = 0.018
    brow_y: float = 0.042
    nose_y: float = -0.012
    cheek_y: float = -0.02
    hinge_y: float = -0.005  # jaw hinge axis (x direction), just in front of the ears
    hinge_z: float = -0.005
    jaw_open_rad: float = 0.35  # ~20 degrees for jawOpen = 1: the lips part by ~4 cm


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(p: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """(V,) Gaussian bump in x/y around (cx, cy), restricted to the front half (z > 0)."""
    g = np.exp(-0.5 * (((p[:, 0] - cx) / sx) ** 2 + ((p[:, 1] - cy) / sy) ** 2))
    return g * _smoothstep(p[:, 2] / 0.03)


def _spaced(n: int, lo: float, hi: float, centre: float, width: float, boost: float) -> np.ndarray:
    """n angles in [lo, hi), with sample density 1 + boost * exp(-((a - centre) / width)^2 / 2)."""
    fine = np.linspace(lo, hi, 4097)
    density = 1.0 + boost * np.exp(-0.5 * ((fine - centre) / width) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    return np.interp(np.arange(n) / n * cdf[-1], cdf, fine)


def build_mesh(shape: HeadShape = HeadShape(), lm: Landmarks = Landmarks()):
    """(template (V, 3), faces (F, 3), lower_lip (V,) bool, mouth_y): the rest mesh with its slit.

    ``mouth_y`` is the height of the grid row that carries the slit (the one nearest lm.mouth_y).
    """
    cols, rows = shape.columns, shape.rows
    # Azimuth phi from the front (0, +z) towards +x; the front column sits exactly at phi = 0.
    phi = _spaced(cols, -np.pi, np.pi, 0.0, shape.face_azimuth_width_rad, shape.face_boost)
    phi[cols // 2] = 0.0  # by symmetry it is 0 up to rounding; the lip centres need exactly x = 0
    theta_c = float(np.arccos(np.clip(shape.face_centre_y_m / shape.half_height_m, -1, 1)))
    theta = _spaced(rows + 1, 0.0, np.pi, theta_c, shape.face_polar_width_rad, shape.face_boost)[1:]
    th, ph = np.meshgrid(theta, phi, indexing="ij")  # (rows, cols)
    x = shape.half_width_m * np.sin(th) * np.sin(ph)
    y = shape.half_height_m * np.cos(th)
    z = shape.half_depth_m * np.sin(th) * np.cos(ph)
    grid = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    poles = np.array([[0.0, shape.half_height_m, 0.0], [0.0, -shape.half_height_m, 0.0]])
    pts = np.concatenate([grid, poles])
    top, bottom = rows * cols, rows * cols + 1

    def vid(r: int, c: int) -> int:
        return r * cols + c % cols

    # The slit: the row nearest mouth_y, the columns strictly inside the mouth corners.
    mouth_row = int(np.argmin(np.abs(shape.half_height_m * np.cos(theta) - lm.mouth_y)))
    row_x = x[mouth_row]
    inside = [c for c in range(cols) if abs(row_x[c]) < lm.mouth_half_width and np.cos(phi[c]) > 0]
    dup = {vid(mouth_row, c): len(pts) + i for i, c in enumerate(inside)}
    pts = np.concatenate([pts, pts[list(dup)]])

    faces = []
    for r in range(rows - 1):
        for c in range(cols):
            a, b, cc, d = vid(r, c), vid(r, c + 1), vid(r + 1, c + 1), vid(r + 1, c)
            if r == mouth_row:  # the quad below the slit uses the lower-lip copies
                a, b = dup.get(a, a), dup.get(b, b)
            faces += [(a, d, cc), (a, cc, b)]  # counter-clockwise seen from outside
    for c in range(cols):
        faces.append((top, vid(0, c), vid(0, c + 1)))
        faces.append((bottom, vid(rows - 1, c + 1), vid(rows - 1, c)))
    lower_lip = np.zeros(len(pts), dtype=bool)
    lower_lip[list(dup.values())] = True
    mouth_y = float(shape.half_height_m * np.cos(theta[mouth_row]))
    return _sculpt(pts, shape, lm), np.asarray(faces, dtype=np.int32), lower_lip, mouth_y


def _sculpt(p: np.ndarray, shape: HeadShape, lm: Landmarks) -> np.ndarray:
    """Bumps that make the ellipsoid read as a face; x/y of the mouth row are kept."""
    p = p.copy()
    below = _smoothstep(-p[:, 1] / shape.half_height_m)
    p[:, 0] *= 1.0 - 0.25 * below  # the jaw tapers to the chin
    bumps = (
        0.022 * _gauss(p, 0.0, lm.nose_y, 0.008, 0.016)  # nose
        + 0.004 * _gauss(p, 0.0, lm.nose_y - 0.018, 0.006, 0.004)  # nose tip / columella
        + 0.004 * _gauss(p, 0.0, lm.brow_y, 0.05, 0.008)  # brow ridge
        - 0.007
        * (
            _gauss(p, lm.eye_x, lm.eye_y, 0.012, 0.008)
            + _gauss(p, -lm.eye_x, lm.eye_y, 0.012, 0.008)
        )
        + 0.005 * _gauss(p, 0.0, lm.mouth_y, 0.022, 0.012)  # lips
        + 0.006 * _gauss(p, 0.0, -0.088, 0.018, 0.01)  # chin
    )
    p[:, 2] += bumps
    return p


def _jaw_weight(p: np.ndarray, lower_lip: np.ndarray, lm: Landmarks) -> np.ndarray:
    """(V,) how much a vertex follows the jaw: 1 below the slit, fading sideways and to the back."""
    below = lm.mouth_y - p[:, 1]
    near_slit = np.where(lower_lip | (below > 1e-4), 1.0, 0.0)
    far = _smoothstep(below / 0.015)  # beside the mouth, the cheeks stretch over 1.5 cm
    lateral = _smoothstep((np.abs(p[:, 0]) - lm.mouth_half_width) / 0.015)
    w = (1.0 - lateral) * near_slit + lateral * far
    return w * _smoothstep((p[:, 2] + 0.04) / 0.05)  # nothing at the back of the head


def build_deltas(p: np.ndarray, lower_lip: np.ndarray, lm: Landmarks = Landmarks()) -> np.ndarray:
    """(51, V, 3) blendshape deltas in RIG_NAMES order for template ``p``."""
    v = len(p)
    zero = np.zeros((v, 3))
    ex, ey, ez = np.eye(3)
    jaw = _jaw_weight(p, lower_lip, lm)[:, None]

    # jawOpen: rotate about the x axis through the hinge; the lower face swings down and back.
    hinge = np.array([0.0, lm.hinge_y, lm.hinge_z])
    c, s = np.cos(lm.jaw_open_rad), np.sin(lm.jaw_open_rad)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # rotates +z (front) towards -y
    jaw_open = jaw * ((p - hinge) @ rot.T + hinge - p)

    # Lip fields: a Gaussian around the mouth split into upper and lower lip by the slit.
    lip = _gauss(p, 0.0, lm.mouth_y, 0.016, 0.008)
    is_lower = lower_lip | (p[:, 1] < lm.mouth_y - 1e-4)
    ll = (lip * is_lower)[:, None]
    ul = (lip * ~is_lower)[:, None]
    side = {
        "Left": _smoothstep(p[:, 0] / 0.02 + 0.5)[:, None],
        "Right": _smoothstep(-p[:, 0] / 0.02 + 0.5)[:, None],
    }
    sign = {"Left": 1.0, "Right": -1.0}
    corner = {
        k: _gauss(p, sign[k] * lm.mouth_half_width, lm.mouth_y, 0.01, 0.01)[:, None] for k in sign
    }
    toward_mid = -np.sign(p[:, 0])[:, None] * ex  # for rounding the lips
    mouth = lip[:, None] + sum(corner.values())  # (V, 1)

    d: dict[str, np.ndarray] = {
        "jawOpen": jaw_open,
        "jawForward": jaw * 0.008 * ez,
        "jawLeft": jaw * 0.008 * ex,
        "jawRight": jaw * -0.008 * ex,
        # mouthClose (used with jawOpen in ARKit): brings the lower lip back up to the upper one.
        "mouthClose": -ll * jaw_open + ul * -0.002 * ey,
        "mouthFunnel": mouth * 0.010 * ez
        + ul * 0.004 * ey
        - ll * 0.004 * ey
        + sum(corner.values()) * 0.006 * toward_mid,
        "mouthPucker": mouth * 0.012 * ez + sum(corner.values()) * 0.010 * toward_mid,
        "mouthLeft": mouth * 0.008 * ex,
        "mouthRight": mouth * -0.008 * ex,
        "mouthRollLower": ll * (0.002 * ey - 0.006 * ez),
        "mouthRollUpper": ul * (-0.002 * ey - 0.006 * ez),
        "mouthShrugLower": (ll + 0.5 * _gauss(p, 0.0, -0.075, 0.02, 0.015)[:, None])
        * (0.004 * ey + 0.003 * ez),
        "mouthShrugUpper": ul * (0.003 * ey + 0.002 * ez),
    }
    for k, sg in sign.items():
        out = sg * ex
        d[f"mouthSmile{k}"] = corner[k] * (0.006 * out + 0.008 * ey - 0.003 * ez)
        d[f"mouthFrown{k}"] = corner[k] * (-0.006 * ey)
        d[f"mouthDimple{k}"] = corner[k] * (0.004 * out - 0.004 * ez)
        d[f"mouthStretch{k}"] = corner[k] * (0.008 * out - 0.002 * ey - 0.002 * ez)
        d[f"mouthPress{k}"] = side[k] * (
            ul * -0.003 * ey + ll * 0.003 * ey - (ul + ll) * 0.003 * ez
        )
        d[f"mouthLowerDown{k}"] = side[k] * ll * -0.006 * ey
        d[f"mouthUpperUp{k}"] = side[k] * ul * 0.006 * ey

        x_eye = sg * lm.eye_x
        upper_lid = _gauss(p, x_eye, lm.eye_y + 0.005, 0.012, 0.005)[:, None]
        lower_lid = _gauss(p, x_eye, lm.eye_y - 0.006, 0.012, 0.004)[:, None]
        d[f"eyeBlink{k}"] = upper_lid * -0.010 * ey + lower_lid * 0.002 * ey
        d[f"eyeSquint{k}"] = upper_lid * -0.002 * ey + lower_lid * 0.003 * ey
        d[f"eyeWide{k}"] = upper_lid * 0.003 * ey
        d[f"eyeLookDown{k}"] = upper_lid * -0.002 * ey
        d[f"eyeLookUp{k}"] = upper_lid * 0.002 * ey
        d[f"eyeLookIn{k}"] = (upper_lid + lower_lid) * -0.001 * out
        d[f"eyeLookOut{k}"] = (upper_lid + lower_lid) * 0.001 * out

        brow = _gauss(p, sg * lm.eye_x, lm.brow_y, 0.016, 0.008)[:, None]
        d[f"browDown{k}"] = brow * (-0.006 * ey - 0.002 * out - 0.001 * ez)
        d[f"browOuterUp{k}"] = (
            _gauss(p, sg * (lm.eye_x + 0.014), lm.brow_y, 0.01, 0.01)[:, None] * 0.008 * ey
        )
        d[f"cheekSquint{k}"] = (
            _gauss(p, sg * lm.eye_x, lm.cheek_y + 0.012, 0.012, 0.01)[:, None] * 0.004 * ey
        )
        d[f"noseSneer{k}"] = _gauss(p, sg * 0.011, lm.nose_y - 0.004, 0.006, 0.01)[:, None] * (
            0.004 * ey + 0.001 * ez
        )

    d["browInnerUp"] = _gauss(p, 0.0, lm.brow_y, 0.012, 0.01)[:, None] * 0.008 * ey
    outward = p / np.linalg.norm(p, axis=1, keepdims=True)
    cheeks = _gauss(p, 0.045, lm.mouth_y + 0.01, 0.015, 0.015) + _gauss(
        p, -0.045, lm.mouth_y + 0.01, 0.015, 0.015
    )
    d["cheekPuff"] = cheeks[:, None] * 0.008 * outward
    return np.stack([np.broadcast_to(d.get(n, zero), (v, 3)) for n in RIG_NAMES])


def build_procedural_rig(shape: HeadShape = HeadShape(), lm: Landmarks = Landmarks()) -> FaceRig:
    """The procedural FaceRig (``name="procedural"``, no capture take). Arrays are read-only."""
    template, faces, lower_lip, mouth_y = build_mesh(shape, lm)
    lm = dataclasses.replace(lm, mouth_y=mouth_y)  # the deformations follow the actual slit
    deltas = build_deltas(template, lower_lip, lm)
    mouth_open = find_mouth_open_pair(template, deltas, RIG_NAMES)
    masks = derive_masks(template, deltas, RIG_NAMES, mouth_open)
    arrays = [template.astype(np.float32), faces, deltas.astype(np.float32), *masks.values()]
    for a in arrays:
        a.flags.writeable = False
    return FaceRig(
        name="procedural",
        template=arrays[0],
        faces=arrays[1],
        blendshape_names=RIG_NAMES,
        deltas=arrays[2],
        masks=dict(zip(masks, arrays[3:], strict=True)),
        capture=None,
        capture_fps=30.0,
        mouth_open=mouth_open,
    )
