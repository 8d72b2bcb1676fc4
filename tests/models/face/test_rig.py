"""The face rigs: decoded facecap (fetched once per session if missing) and procedural."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from models.errors import DataError
from models.face import facecap as assets
from models.face.load import load_rig
from models.face.procedural import build_procedural_rig
from models.face.rig import (
    ARKIT_NAMES,
    RIG_NAMES,
    FaceRig,
    load_rig_npz,
    save_rig_npz,
)


@pytest.fixture(scope="session")
def facecap_npz() -> Path:
    """The decoded facecap rig; fetched here if missing. No network is a failure, not a skip."""
    npz = assets.assets_dir() / "facecap.npz"
    if not npz.is_file():
        try:
            assets.fetch_facecap()
        except (assets.DataError, DataError) as exc:
            pytest.fail(
                f"assets/facecap.npz is missing and fetching it failed ({exc}); "
                "run `make setup` or `python -m models.face.facecap fetch` with network access"
            )
    return npz


@pytest.fixture(scope="session")
def facecap(facecap_npz: Path) -> FaceRig:
    return load_rig("facecap", path=facecap_npz)


@pytest.fixture(scope="session")
def procedural() -> FaceRig:
    return load_rig("procedural")


@pytest.fixture(params=["facecap", "procedural"])
def rig(request) -> FaceRig:
    return request.getfixturevalue(request.param)


def one_hot(rig: FaceRig, name: str, value: float = 1.0) -> np.ndarray:
    w = np.zeros(len(rig.blendshape_names), dtype=np.float32)
    w[rig.weight_index(name)] = value
    return w


# ---- both rigs -----------------------------------------------------------------------------------
def test_api_shapes(rig: FaceRig) -> None:
    v = rig.vertex_count
    assert rig.blendshape_names == RIG_NAMES and len(RIG_NAMES) == 51
    assert rig.template.shape == (v, 3) and rig.template.dtype == np.float32
    assert rig.faces.dtype == np.int32 and rig.faces.shape[1] == 3
    assert 0 <= rig.faces.min() and rig.faces.max() < v
    assert rig.deltas.shape == (51, v, 3) and rig.deltas.dtype == np.float32
    assert np.isfinite(rig.deltas).all()


def test_metric_bbox_and_orientation(rig: FaceRig) -> None:
    lo, hi = rig.template.min(axis=0), rig.template.max(axis=0)
    width, height, depth = hi - lo
    assert 0.12 < width < 0.25 and 0.2 <= height <= 0.25 and 0.15 < depth < 0.3
    nose = rig.template[np.argmax(rig.template[:, 2])]  # the most forward point (+z)
    assert abs(nose[0]) < 0.01
    upper, lower = rig.mouth_open
    assert rig.template[upper, 1] < nose[1]  # mouth below the nose: y is up
    assert rig.template[upper, 2] > 0.5 * hi[2]  # the mouth is on the front


def test_jaw_open_moves_the_jaw_down(rig: FaceRig) -> None:
    d = rig.deltas[rig.weight_index("jawOpen")]
    mag = np.linalg.norm(d, axis=1)
    assert mag.max() > 0.02  # metres
    moved = mag > 0.2 * mag.max()
    assert d[moved, 1].mean() < 0  # downwards
    assert rig.template[moved, 1].mean() < rig.template[:, 1].mean()  # the lower face


def test_masks_nonempty_and_disjoint(rig: FaceRig) -> None:
    lip, upper = rig.masks["lip"], rig.masks["upper_face"]
    assert lip.shape == upper.shape == (rig.vertex_count,)
    assert lip.dtype == bool and upper.dtype == bool
    assert 100 <= lip.sum() <= 600
    assert 200 <= upper.sum() <= 1200
    assert not (lip & upper).any()
    assert rig.template[lip, 1].mean() < rig.template[upper, 1].mean()
    assert all(lip[i] for i in rig.mouth_open)


def test_jaw_open_opens_the_mouth(rig: FaceRig) -> None:
    openings = [
        float(rig.mouth_opening(rig.vertices(one_hot(rig, "jawOpen", w)))) for w in (0, 0.5, 1)
    ]
    assert openings[0] < 0.002
    assert openings[0] < openings[1] < openings[2]
    assert openings[2] > 0.02


def test_vertices_shapes_and_linearity(rig: FaceRig) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (2, 51)).astype(np.float32)
    np.testing.assert_array_equal(rig.vertices(np.zeros(51)), rig.template)
    assert rig.vertices(a).shape == (rig.vertex_count, 3)
    batch = rig.vertices(np.stack([a, b, a + b]))
    assert batch.shape == (3, rig.vertex_count, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(
        batch[2] - rig.template, (batch[0] - rig.template) + (batch[1] - rig.template), atol=1e-6
    )


def test_npz_round_trip(rig: FaceRig, tmp_path: Path) -> None:
    path = tmp_path / "rig.npz"
    save_rig_npz(rig, path)
    back = load_rig_npz(path)
    assert back.name == rig.name and back.mouth_open == rig.mouth_open
    np.testing.assert_array_equal(back.deltas, rig.deltas)
    np.testing.assert_array_equal(back.faces, rig.faces)
    assert set(back.masks) == set(rig.masks)
    assert (back.capture is None) == (rig.capture is None)


# ---- facecap -------------------------------------------------------------------------------------
def test_facecap_counts(facecap: FaceRig) -> None:
    assert facecap.name == "facecap"
    assert facecap.vertex_count == 2694
    assert facecap.faces.shape == (5032, 3)


def test_facecap_capture_take(facecap: FaceRig) -> None:
    cap = facecap.capture
    assert cap is not None and cap.shape[1] == len(ARKIT_NAMES) == 52
    assert facecap.capture_fps == pytest.approx(30.0)
    assert 10.5 < cap.shape[0] / facecap.capture_fps < 12.0  # the ~11 s take
    assert cap.min() >= 0.0 and cap.max() <= 1.0
    assert cap[:, ARKIT_NAMES.index("jawOpen")].max() > 0.5  # the subject speaks and opens the jaw


def test_facecap_fetch_is_idempotent(facecap_npz: Path, capsys) -> None:
    assert assets.main(["fetch", "--dest", str(facecap_npz.parent)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_arkit_name_mapping() -> None:
    assert assets.arkit_name("mouthSmile_L") == "mouthSmileLeft"
    assert assets.arkit_name("eyeBlink_R") == "eyeBlinkRight"
    assert assets.arkit_name("jawOpen") == "jawOpen"


# ---- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_npz_names_the_fix(facecap_npz: Path, tmp_path: Path, keep: float) -> None:
    data = facecap_npz.read_bytes()
    bad = tmp_path / "facecap.npz"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError) as err:
        load_rig("facecap", path=bad)
    assert str(bad) in str(err.value)
    assert "python -m models.face.facecap fetch" in str(err.value)


def test_invalid_content_names_the_fix(procedural: FaceRig, tmp_path: Path) -> None:
    path = tmp_path / "rig.npz"
    save_rig_npz(procedural, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["deltas"] = arrays["deltas"][:10]  # wrong number of blendshapes
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="models.face.facecap fetch"):
        load_rig_npz(path)


def test_missing_facecap_is_an_error_and_auto_falls_back(tmp_path: Path, caplog) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="models.face.facecap fetch"):
        load_rig("facecap", path=missing)
    with caplog.at_level(logging.WARNING, logger="models.face.rig"):
        rig = load_rig("auto", path=missing)
    assert rig.name == "procedural"
    assert "procedural" in caplog.text


def test_auto_prefers_facecap(facecap_npz: Path) -> None:
    assert load_rig("auto", path=facecap_npz).name == "facecap"


def test_unknown_rig_name() -> None:
    with pytest.raises(DataError, match="unknown rig"):
        load_rig("gorilla")


# ---- procedural ----------------------------------------------------------------------------------
def test_procedural_is_deterministic_and_cached(procedural: FaceRig) -> None:
    assert procedural.name == "procedural" and procedural.capture is None
    assert 1500 <= procedural.vertex_count <= 3000
    assert load_rig("procedural") is procedural
    again = build_procedural_rig()
    np.testing.assert_array_equal(again.template, procedural.template)
    np.testing.assert_array_equal(again.deltas, procedural.deltas)


def test_procedural_shapes_do_what_their_names_say(procedural: FaceRig) -> None:
    r = procedural
    t = r.template
    upper, lower = r.mouth_open

    def d(name: str) -> np.ndarray:
        return r.deltas[r.weight_index(name)]

    corner_l = np.argmax(np.linalg.norm(d("mouthSmileLeft"), axis=1))
    assert t[corner_l, 0] > 0 and d("mouthSmileLeft")[corner_l, 1] > 0  # left corner goes up
    assert d("mouthFrownRight")[np.argmax(np.linalg.norm(d("mouthFrownRight"), axis=1)), 1] < 0
    assert d("mouthPucker")[upper, 2] > 0 and d("mouthFunnel")[lower, 2] > 0  # lips protrude
    assert d("mouthStretchLeft")[corner_l, 0] > 0  # wider
    blink = d("eyeBlinkLeft")
    lid = np.argmax(np.linalg.norm(blink, axis=1))
    assert blink[lid, 1] < 0 and t[lid, 0] > 0 and r.masks["upper_face"][lid]
    assert d("browInnerUp")[:, 1].max() > 0.005
    for name in RIG_NAMES:
        if not name.startswith("eyeLook"):
            assert np.abs(d(name)).max() > 0.002, name
