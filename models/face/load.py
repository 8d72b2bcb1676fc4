"""``load_rig``: the one way to get a face rig, the decoded facecap head or the procedural one.

It lives apart from ``rig.py`` because it needs both sources, and both sources build on ``rig.py``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from models.errors import DataError
from models.face.facecap import assets_dir
from models.face.procedural import build_procedural_rig
from models.face.rig import FIX_HINT, FaceRig, load_rig_npz

log = logging.getLogger(__name__)


def facecap_npz_path() -> Path:
    """Where ``python -m models.face.facecap fetch`` writes the decoded facecap rig."""
    return assets_dir() / "facecap.npz"


@functools.lru_cache(maxsize=1)
def _procedural() -> FaceRig:
    return build_procedural_rig()


def load_rig(name: str = "auto", path: Path | str | None = None) -> FaceRig:
    """The face rig ``name``: "facecap", "procedural", or "auto" (facecap if decoded, else
    procedural).

    ``path`` overrides the facecap npz location. Raises DataError (with the fix) when "facecap" is
    asked for and its npz is missing or corrupt; "auto" falls back with a warning only when the
    file is absent (a corrupt file is an error worth seeing). The procedural rig is built once and
    cached.
    """
    npz = Path(path) if path is not None else facecap_npz_path()
    if name == "facecap":
        return load_rig_npz(npz)
    if name == "procedural":
        return _procedural()
    if name == "auto":
        if npz.is_file():
            return load_rig_npz(npz)
        log.warning("facecap rig %s not found, using the procedural head; %s", npz, FIX_HINT)
        return _procedural()
    raise DataError(f"unknown rig {name!r}: choose 'facecap', 'procedural' or 'auto'")
