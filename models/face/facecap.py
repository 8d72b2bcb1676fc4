"""Face assets: fetch the facecap head once at setup and decode it into ``assets/facecap.npz``.

``facecap.glb`` (the three.js "Face Cap" example head: 2694 vertices, 52 ARKit morph targets and an
11 s, 30 fps face-capture take) ships inside the PyPI wheel ``openfacefx==0.24.0``.
``fetch_facecap`` downloads that wheel with pip, keeps ``assets/facecap.glb`` for the browser
viewer and writes the decoded rig (see ``models.face.rig.save_rig_npz``). The mesh has no licence of
its own and is never committed (``assets/`` is gitignored); ``models.face.procedural`` is the
fallback.

Coordinates. The head node chain is mesh node -> head -> grp_transform -> grp_scale -> Empty: a
dequantisation scale/offset (KHR_mesh_quantization), the rest pose of the capture rig (a ~2 degree
rotation), a 90 degree turn about x with scale 0.01 and a scale of 10. The result is y up, the face
looking +z, in decimetres (Face Cap exports centimetres; the two scales give 0.1), so metres =
scene units * ``SCENE_TO_METRES``.

CLI: ``python -m models.face.facecap fetch [--force] [--dest DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import DataError
from models.face.gltf import Glb
from models.face.rig import (
    ARKIT_NAMES,
    RIG_NAMES,
    FaceRig,
    derive_masks,
    find_mouth_open_pair,
    load_rig_npz,
    save_rig_npz,
)

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "openfacefx==0.24.0"
GLB_MEMBER = "openfacefx/studio_web/assets/facecap.glb"
# sha256 of facecap.glb in openfacefx 0.24.0: a changed file means a changed rig, so we stop.
GLB_SHA256 = "6bfce6d0fcbb5839f5102b79733007859fef7c5df6d9eb49e2264542810b5f64"
SCENE_TO_METRES = 0.1
EXPECTED_VERTICES = 2694
PIP_TIMEOUT_S = 600




def assets_dir() -> Path:
    """``$TALKER_ASSETS`` if set, else ``<repo root>/assets`` (repo root: parent of ``models/``)."""
    env = os.environ.get("TALKER_ASSETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "assets"


# ---- fetching ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchResult:
    glb: Path
    npz: Path
    actions: tuple[str, ...]  # what was done, in order, for the CLI to print


def fetch_facecap(dest_dir: Path | str | None = None, force: bool = False) -> FetchResult:
    """Make ``dest_dir/facecap.glb`` and a valid ``dest_dir/facecap.npz`` exist; idempotent.

    Skips everything when both exist and the npz loads; decodes again from a present glb of the
    expected checksum; otherwise downloads the wheel. ``force`` redoes both. Raises DataError.
    """
    dest = Path(dest_dir) if dest_dir is not None else assets_dir()
    glb, npz = dest / "facecap.glb", dest / "facecap.npz"
    actions: list[str] = []
    if not force and glb.is_file() and npz.is_file():
        try:
            load_rig_npz(npz)
            return FetchResult(glb, npz, (f"{npz} is present and valid: nothing to do",))
        except DataError as exc:
            actions.append(f"{npz} is invalid ({exc}); decoding it again")
    dest.mkdir(parents=True, exist_ok=True)
    if force or not glb.is_file() or _sha256(glb) != GLB_SHA256:
        _download_glb(glb)
        actions.append(f"downloaded {WHEEL_REQUIREMENT} from PyPI and extracted {glb}")
    rig = decode_facecap(glb.read_bytes())
    save_rig_npz(rig, npz)
    load_rig_npz(npz)  # what we wrote must read back
    actions.append(f"decoded {npz}: {describe_rig(rig)}")
    return FetchResult(glb, npz, tuple(actions))


def describe_rig(rig: FaceRig) -> str:
    """One line: counts, bounding box in metres, mask sizes, capture take."""
    lo = np.round(rig.template.min(axis=0).astype(float), 4).tolist()
    hi = np.round(rig.template.max(axis=0).astype(float), 4).tolist()
    masks = ", ".join(f"{k}={int(m.sum())}" for k, m in sorted(rig.masks.items()))
    capture = None if rig.capture is None else rig.capture.shape
    return (
        f"{rig.vertex_count} vertices, {len(rig.faces)} triangles, "
        f"{len(rig.blendshape_names)} blendshapes, bbox min {lo} max {hi} m, masks {masks}, "
        f"mouth_open {rig.mouth_open}, capture {capture} at {rig.capture_fps:g} fps"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download_glb(glb: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="talker-wheel-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            WHEEL_REQUIREMENT,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise DataError(
                f"pip download {WHEEL_REQUIREMENT} timed out after {PIP_TIMEOUT_S} s (no network?)"
            ) from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise DataError(
                f"could not download {WHEEL_REQUIREMENT} from PyPI (no network, or PyPI "
                f"unreachable?); pip said:\n{tail}"
            )
        wheels = sorted(Path(tmp).glob("openfacefx-*.whl"))
        if not wheels:
            raise DataError(f"pip reported success but left no openfacefx wheel in {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                data = zf.read(GLB_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{wheels[0].name} has no readable {GLB_MEMBER}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != GLB_SHA256:
        raise DataError(f"{GLB_MEMBER} has sha256 {digest}, expected {GLB_SHA256}")
    tmp_glb = glb.with_suffix(".glb.tmp")
    tmp_glb.write_bytes(data)
    tmp_glb.replace(glb)


# ---- decoding ------------------------------------------------------------------------------------
def arkit_name(target_name: str) -> str:
    """facecap target names use ``_L``/``_R`` suffixes: ``mouthSmile_L`` -> ``mouthSmileLeft``."""
    for short, full in (("_L", "Left"), ("_R", "Right")):
        if target_name.endswith(short):
            return target_name[: -len(short)] + full
    return target_name


def decode_facecap(data: bytes) -> FaceRig:
    """facecap.glb bytes -> the ``facecap`` FaceRig (metres, RIG_NAMES order). Raises DataError."""
    try:
        return _decode_facecap(Glb.from_bytes(data))
    except (DataError, KeyError, IndexError, ValueError) as exc:
        raise DataError(f"cannot decode facecap.glb: {exc!r}") from exc


def _decode_facecap(g: Glb) -> FaceRig:
    node_index, mesh = _morph_mesh_node(g)
    prim = mesh["primitives"][0]
    world = g.node_world_matrix(node_index) * SCENE_TO_METRES  # scales rotation and translation
    world[3, 3] = 1.0
    linear = world[:3, :3]

    positions = g.accessor(prim["attributes"]["POSITION"]).astype(np.float64)  # (V, 3) quantised
    template = positions @ linear.T + world[:3, 3]
    faces = g.accessor(prim["indices"]).astype(np.int64).reshape(-1, 3)
    target_names = [arkit_name(n) for n in mesh["extras"]["targetNames"]]
    by_name = {n: k for k, n in enumerate(target_names)}
    missing = [n for n in RIG_NAMES if n not in by_name]
    if missing:
        raise DataError(f"facecap.glb lacks morph targets {missing}")
    deltas = np.stack(
        [
            g.accessor(prim["targets"][by_name[n]]["POSITION"]).astype(np.float64) @ linear.T
            for n in RIG_NAMES
        ]
    )  # (K, V, 3): the translation does not apply to offsets
    if template.shape[0] != EXPECTED_VERTICES:
        raise DataError(
            f"head mesh has {template.shape[0]} vertices, expected {EXPECTED_VERTICES}"
        )

    capture, fps = _capture_take(g, node_index, target_names)
    names = RIG_NAMES
    mouth_open = find_mouth_open_pair(template, deltas, names)
    return FaceRig(
        name="facecap",
        template=template.astype(np.float32),
        faces=faces.astype(np.int32),
        blendshape_names=names,
        deltas=deltas.astype(np.float32),
        masks=derive_masks(template, deltas, names, mouth_open),
        capture=capture,
        capture_fps=fps,
        mouth_open=mouth_open,
    )


def _morph_mesh_node(g: Glb) -> tuple[int, dict]:
    """The (node index, mesh) of the one mesh with morph targets and ``extras.targetNames``."""
    found = [
        (i, g.doc["meshes"][n["mesh"]])
        for i, n in enumerate(g.doc["nodes"])
        if "mesh" in n and "targetNames" in g.doc["meshes"][n["mesh"]].get("extras", {})
    ]
    if len(found) != 1:
        raise DataError(f"expected one node with a morph-target mesh, found {len(found)}")
    return found[0]


def _capture_take(
    g: Glb, node_index: int, target_names: list[str]
) -> tuple[np.ndarray | None, float]:
    """The take on the head's ``weights``: (T, 52) in ARKIT_NAMES order, and its fps."""
    for anim in g.doc.get("animations", []):
        for ch in anim["channels"]:
            if ch["target"].get("node") == node_index and ch["target"]["path"] == "weights":
                sampler = anim["samplers"][ch["sampler"]]
                times = g.accessor(sampler["input"]).astype(np.float64)  # (T,) seconds
                values = g.accessor(sampler["output"]).astype(np.float32)  # (T * 52,) in [0, 1]
                n = len(target_names)
                if sampler.get("interpolation", "LINEAR") == "CUBICSPLINE":
                    values = values.reshape(len(times), 3, n)[
                        :, 1
                    ]  # keep the values, drop tangents
                values = values.reshape(len(times), n)
                order = [target_names.index(name) for name in ARKIT_NAMES]
                fps = 1.0 / float(np.median(np.diff(times)))
                return np.ascontiguousarray(values[:, order]), round(fps, 3)
    return None, 30.0


# ---- CLI -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.face.facecap", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"download {WHEEL_REQUIREMENT} and decode facecap.glb")
    fetch.add_argument(
        "--dest", type=Path, default=None, help="target folder (default: assets_dir())"
    )
    fetch.add_argument("--force", action="store_true", help="download and decode even if present")
    args = parser.parse_args(argv)
    try:
        result = fetch_facecap(args.dest, force=args.force)
    except DataError as exc:
        print(f"models.face.facecap fetch failed: {exc}", file=sys.stderr)
        return 1
    for line in result.actions:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
