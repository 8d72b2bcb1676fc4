"""The shipped weights give the same frames as before the House v2 refactor.

``tests/fixtures/parity/`` holds a fixed input (espeak-ng speech, 16 kHz) and the frames that the
shipped model produced for it at commit e4e8a24, before models/ moved into rooms
(``tests/fixtures/make_parity_frames.py``). Same input, same seed, same frames: the refactor
changed no behaviour.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.net.talker import Talker

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "parity"
WEIGHTS = REPO / "models" / "weights" / "default.safetensors"


@pytest.fixture(scope="module")
def shipped() -> Talker:
    torch.set_num_threads(1)
    return Talker.from_checkpoint(WEIGHTS)


@pytest.fixture(scope="module")
def expected() -> tuple[np.ndarray, dict, dict[str, np.ndarray]]:
    pcm, rate = sf.read(str(FIXTURE / "speech16k.wav"), dtype="int16")
    meta = json.loads((FIXTURE / "frames.json").read_text())
    assert rate == meta["sample_rate_hz"] == 16000
    with np.load(FIXTURE / "frames.npz") as z:
        return pcm.astype(np.float32) / 32768.0, meta, {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", ["own", "mean"])
def test_generate_matches_frames_saved_before_the_move(shipped, expected, case):
    audio, meta, frames = expected
    got = shipped.generate(audio, identity=meta[case]["identity"], seed=meta[case]["seed"])
    assert got.shape == frames[case].shape
    np.testing.assert_allclose(got, frames[case], rtol=1e-4, atol=1e-5)


def test_vertices_match_and_the_mesh_travels_in_the_checkpoint(shipped, expected):
    _, meta, frames = expected
    picked = frames["own"][meta["vertices_of_own_frames"]]
    np.testing.assert_allclose(shipped.vertices(picked), frames["vertices"], atol=1e-6)
    basis = shipped.contract.basis
    assert basis.faces.shape[1] == 3 and len(basis.faces) > 1000
    assert basis.faces.max() == basis.vertex_count - 1


def test_contract_of_the_shipped_model(shipped):
    c = shipped.contract
    assert (c.sample_rate_hz, c.fps) == (16000, 30)
    assert c.identities == tuple(shipped.identities) and len(c.identities) >= 2
    assert c.identity_pick_s == 3.0
    # 3 frames of encoder look-ahead (100 ms) plus the last stacked mel window's reach
    assert 0.1 <= c.lookahead_s < 0.15
