"""Articulation metrics on hand-made lip-gap signals with known answers, and on a real corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.corpus.generator import CorpusConfig, generate_corpus
from models.corpus.phonemes import PAUSE, Phone
from models.data.dataset import TalkingFaceDataset
from models.training.articulation import (
    CONTACT_M,
    LipTrack,
    articulation,
    bilabial_closures,
    lag_ms,
    lip_gap,
    vowel_openings,
)

FPS = 30.0
# 0-0.3 s pause, "b" 0.3-0.4, "a:" 0.4-0.7, "m" 0.7-0.8, "i:" 0.8-1.1, pause to 1.4 s
PHONES = [Phone(PAUSE, 0.0, 0.3), Phone("b", 0.3, 0.4), Phone("A:", 0.4, 0.7, True, 0),
          Phone("m", 0.7, 0.8), Phone("i:", 0.8, 1.1, False, 0), Phone(PAUSE, 1.1, 1.4)]
N = 42  # 1.4 s at 30 fps


def _truth() -> np.ndarray:
    """Closed (0.2 mm) in pauses and bilabials, open 12 mm in "a:", 6 mm in "i:"."""
    t = np.arange(N) / FPS
    gap = np.full(N, 0.2e-3)
    gap[(t >= 0.4) & (t < 0.7)] = 12e-3
    gap[(t >= 0.8) & (t < 1.1)] = 6e-3
    return gap


def test_closures_count_contact_within_one_frame_of_the_phone() -> None:
    gap = _truth()
    assert bilabial_closures(gap, PHONES, FPS) == (2, 2)
    damped = np.maximum(gap, 1.5e-3)  # lips stop 1.5 mm apart: no contact anywhere
    assert bilabial_closures(damped, PHONES, FPS) == (0, 2)
    # contact only one frame after "m" ends (0.8 s = frame 24) still counts; two frames does not
    late = damped.copy()
    late[25] = 0.5e-3
    assert bilabial_closures(late, PHONES, FPS) == (1, 2)
    later = damped.copy()
    later[26] = 0.5e-3
    assert bilabial_closures(later, PHONES, FPS) == (0, 2)
    assert CONTACT_M == 1e-3


def test_vowel_openings_are_the_peak_within_each_vowel() -> None:
    assert vowel_openings(_truth(), PHONES, FPS) == pytest.approx([12e-3, 6e-3])


@pytest.mark.parametrize("shift", [-2, -1, 0, 1, 3])
def test_lag_finds_a_known_shift(shift: int) -> None:
    rng = np.random.default_rng(shift + 10)
    true = np.convolve(rng.random(300), np.ones(5) / 5, mode="same")  # smooth, speech-like
    pred = np.roll(true, shift)  # pred[k] = true[k - shift]: late by `shift` frames
    tracks = [LipTrack(pred[20:-20], true[20:-20], ())]
    assert lag_ms(tracks, FPS) == pytest.approx(shift * 1000 / FPS, abs=4.0)


def test_half_amplitude_lips_read_as_half() -> None:
    true = _truth()
    result = articulation([LipTrack(0.5 * true + 0.1e-3, true, PHONES)], FPS)
    assert result["p90_gap_ratio"] == pytest.approx(0.5, abs=0.02)
    assert result["vowel_opening_ratio"] == pytest.approx(0.5, abs=0.02)
    assert result["true"]["bilabial_closure"] == 1.0 and result["pred"]["bilabial_closure"] == 1.0
    assert result["lag_ms"] == pytest.approx(0.0, abs=4.0)
    still = articulation([LipTrack(np.full(N, 3e-3), true, PHONES)], FPS)
    assert still["pred"]["bilabial_closure"] == 0.0 and still["lag_ms"] is None  # nothing moves


def test_lip_gap_is_the_vertical_opening_and_pressed_lips_read_as_zero() -> None:
    v = np.zeros((4, 4, 3))
    v[:, 0, 1] = [0.0, 0.01, 0.02, -0.001]  # upper lip centre height; the last one pressed down
    v[:, 2, 2] = 0.005  # a depth offset (rolled lips) is not an opening
    assert lip_gap(v, (0, 2)) == pytest.approx([0.0, 0.01, 0.02, 0.0])


def test_the_corpus_ground_truth_closes_every_bilabial(tmp_path: Path) -> None:
    """The generator's lip seal: truth against itself closes all p/b/m, ratio 1, lag 0."""
    cfg = CorpusConfig(talkers=2, utterances=3, heldout_talkers=0, heldout_voices=0, seed=3)
    generate_corpus(cfg, tmp_path / "c", workers=2, progress=False)
    data = TalkingFaceDataset.load(tmp_path / "c")
    assert data.lip_pair is not None
    tracks = []
    for u in data.utterances():
        assert u.phones and u.phones[-1].end_s == pytest.approx(len(u.audio) / 16000, abs=1e-3)
        gap = lip_gap(u.vertices, data.lip_pair)
        tracks.append(LipTrack(gap, gap, u.phones))
    result = articulation(tracks, data.fps)
    assert result["true"]["bilabials"] >= 3
    assert result["true"]["bilabial_closure"] == 1.0
    assert result["p90_gap_ratio"] == 1.0 and result["lag_ms"] == pytest.approx(0.0, abs=1.0)
    assert 5e-3 < result["true"]["p90_gap_m"] < 30e-3
