"""TalkingFaceDataset on a VOCASET-style fixture and on a tiny generated corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.corpus.generator import CorpusConfig, generate_corpus
from models.data.dataset import MotionBasis, TalkingFaceDataset, parse_name
from models.errors import DataError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "vocaset_tiny"
SUBJECTS = ["FaceTalk_170725_00137_TA", "FaceTalk_170728_03272_TA"]


@pytest.fixture(scope="module")
def vocaset() -> TalkingFaceDataset:
    return TalkingFaceDataset.load(FIXTURE)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> TalkingFaceDataset:
    out = tmp_path_factory.mktemp("ds") / "corpus"
    cfg = CorpusConfig(talkers=3, utterances=3, heldout_talkers=1, heldout_voices=0,
                       val_fraction=0.0, test_fraction=0.0, seed=11)
    generate_corpus(cfg, out, workers=1, progress=False)
    return TalkingFaceDataset.load(out)


def test_parse_name() -> None:
    assert parse_name("FaceTalk_170725_00137_TA_sentence01") == (SUBJECTS[0], 1)
    assert parse_name("F1_e03") == ("F1", 3) and parse_name("M3_40") == ("M3", 40)
    with pytest.raises(DataError, match="sentence number"):
        parse_name("nonumber")


def test_vocaset_splits_talkers_and_rates(vocaset: TalkingFaceDataset) -> None:
    assert vocaset.talkers == SUBJECTS
    assert {u.id.rsplit("sentence", 1)[1]: u.split for u in vocaset.utterances()} == {
        "01": "train", "02": "train", "33": "val", "37": "test"}
    assert len(vocaset.utterances("train")) == 4
    u = vocaset.utterances("train")[0]
    assert u.fps == 30 and u.vertices.shape == (9, 6, 3)  # 18 frames at 60 fps -> 9 at 30
    assert len(u.audio) == pytest.approx(0.3 * 16000, abs=1)  # 22050 Hz -> 16 kHz
    assert 0.25 < np.abs(u.audio).max() < 0.35
    # The fixture moves linearly: frame k at 30 fps equals source frame 2k at 60 fps.
    src = np.load(FIXTURE / "vertices_npy" / f"{u.id}.npy").reshape(-1, 6, 3)
    np.testing.assert_allclose(u.vertices, src[::2], atol=1e-6)
    assert set(vocaset.basis.masks) == {"lip", "upper_face"}


def test_vocaset_pca_basis_reconstructs(vocaset: TalkingFaceDataset) -> None:
    basis = vocaset.basis
    assert basis.kind == "pca" and basis.size <= 18
    for u in vocaset.utterances("train"):
        c = basis.encode(u.vertices, u.template)
        np.testing.assert_allclose(basis.decode(c, u.template), u.vertices, atol=1e-5)


def test_pca_fit_is_exact_in_span() -> None:
    rng = np.random.default_rng(0)
    true = rng.standard_normal((3, 5, 3))
    coeffs = rng.standard_normal((40, 3))
    offsets = np.einsum("tk,kvc->tvc", coeffs, true)
    b = MotionBasis.fit_pca(offsets, 3, np.zeros((5, 3)))
    np.testing.assert_allclose(b.decode(b.encode(offsets)), offsets, atol=1e-5)


def test_windows_align_audio_and_motion(vocaset: TalkingFaceDataset) -> None:
    rng = np.random.default_rng(0)
    got = list(vocaset.windows("train", 6, rng))
    assert len(got) == 4
    for audio, coeffs, talker in got:
        assert coeffs.shape == (6, vocaset.basis.size)
        assert len(audio) in (3200, 3201)  # 6 frames at 30 fps = 0.2 s
        assert talker in (0, 1)


def test_missing_folder_and_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        TalkingFaceDataset.load(tmp_path / "nope")
    with pytest.raises(DataError, match="neither corpus.json nor wav"):
        TalkingFaceDataset.load(tmp_path)


def test_generated_corpus_roundtrip(ours: TalkingFaceDataset) -> None:
    assert ours.talkers == ["T00", "T01"]  # T02 is held out
    assert ours.basis.kind == "arkit" and ours.basis.size == 51
    assert len(ours.utterances("heldout_talker")) == 3
    u = ours.utterances("train")[0]
    assert u.weights is not None and len(u.weights) == u.frames
    decoded = ours.basis.decode(np.asarray(u.weights), u.template)
    np.testing.assert_allclose(decoded, u.vertices, atol=2e-5)
    np.testing.assert_allclose(ours.basis.encode(u.vertices, u.template), u.weights, atol=2e-3)
    assert u.frames == int(np.ceil(len(u.audio) / 16000 * 30))


def test_generated_corpus_windows_are_exact_slices(ours: TalkingFaceDataset) -> None:
    rng = np.random.default_rng(1)
    by_id = {u.id: u for u in ours.utterances()}
    n = 15
    for audio, coeffs, talker in ours.windows("train", n, rng):
        # find the utterance and the start frame this window came from
        matches = [(u, k) for u in by_id.values() if u.split == "train"
                   for k in range(u.frames - n + 1) if np.array_equal(u.weights[k:k + n], coeffs)]
        assert len(matches) == 1
        u, k = matches[0]
        a, b = round(k * 16000 / 30), round((k + n) * 16000 / 30)
        np.testing.assert_array_equal(audio, u.audio[a:b])
        assert ours.talkers[talker] == u.talker
