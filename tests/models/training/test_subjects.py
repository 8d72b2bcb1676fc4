"""VOCASET/BIWI correctness: every subject keeps its own template, in targets, metrics and output.

A generated two-subject VOCASET-layout folder whose neutral faces differ by 3 cm: coefficient
targets must be offsets from each subject's own template, metrics must compare faces on their own
templates, and a model trained on it must be able to put its motion on either subject's face.
(Before House v2 every utterance was encoded against one template, so the second subject's
targets carried the 3 cm template difference and LVE reported it as lip error.)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.data.dataset import TalkingFaceDataset
from models.data.windows import load_clips
from models.net.talker import Talker
from models.training.train import TrainConfig, evaluate_talker, train

SUBJECTS = ("FaceTalk_170725_00137_TA", "FaceTalk_170728_03272_TA")
OFFSET_M = 0.03  # the second subject's face is 3 cm away from the first's
V, K_TRUE, FPS, RATE = 40, 3, 60, 16000


def _make_folder(root: Path) -> None:
    """Vertices = own template + motion in a shared 3-vector space driven by a tone's envelope."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    base = rng.normal(size=(V, 3)).astype(np.float32) * 0.05
    shapes = rng.normal(size=(K_TRUE, V, 3)).astype(np.float32) * 0.004
    templates = {s: base + np.float32(OFFSET_M * i) for i, s in enumerate(SUBJECTS)}
    for si, subject in enumerate(SUBJECTS):
        for sentence in (1, 2, 3, 4, 33, 37):
            seconds = 1.5
            t = np.arange(int(seconds * FPS)) / FPS
            env = 0.5 + 0.5 * np.sin(2 * np.pi * (1.3 + 0.2 * si) * t + sentence)
            coeffs = np.stack([env, 0.3 * env**2, 0.2 * np.cos(3 * t)], axis=1)
            verts = templates[subject] + np.einsum("tk,kvc->tvc", coeffs, shapes)
            stem = f"{subject}_sentence{sentence:02d}"
            np.save(root / "vertices_npy" / f"{stem}.npy", verts.reshape(len(t), -1))
            n = int(seconds * RATE)
            env_audio = np.interp(np.arange(n) / RATE, t, env)
            tone = 0.3 * env_audio * np.sin(2 * np.pi * (180 + 40 * si) * np.arange(n) / RATE)
            sf.write(str(root / "wav" / f"{stem}.wav"), tone.astype(np.float32), RATE,
                     subtype="PCM_16")
    with (root / "templates.pkl").open("wb") as f:
        pickle.dump(templates, f, protocol=2)
    lip = np.zeros(V, bool)
    lip[:8] = True
    np.savez(root / "masks.npz", lip=lip, upper_face=np.arange(V) >= 20)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two_subjects")
    _make_folder(root)
    return root


@pytest.fixture(scope="module")
def dataset(folder: Path) -> TalkingFaceDataset:
    return TalkingFaceDataset.load(folder, pca_components=8)


def test_targets_are_offsets_from_each_subjects_own_template(dataset):
    clips = load_clips(dataset, "train")
    assert {c.talker for c in clips} == set(SUBJECTS)
    for clip in clips:
        own = dataset.templates()[clip.talker]
        np.testing.assert_array_equal(clip.template, own)
        # the targets reproduce the captured faces on the subject's own template
        np.testing.assert_allclose(dataset.basis.decode(clip.coeffs, clip.template),
                                   clip.vertices, atol=2e-5)
    # and carry only motion: both subjects' coefficients live on the same scale
    scale = [np.abs(np.concatenate([c.coeffs for c in clips if c.talker == s])).max()
             for s in SUBJECTS]
    assert max(scale) < 2 * min(scale)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    return train(dataset, TrainConfig.preset("tiny"), out, seed=0, progress=False)


def test_metrics_compare_faces_on_their_own_templates(dataset, trained):
    talker = Talker.from_checkpoint(trained)
    clips = load_clips(dataset, "test", tuple(talker.identities))
    metrics = evaluate_talker(talker, clips, steps=2)
    # lip error is at the scale of the motion (millimetres), not of the 3 cm template offset
    assert metrics["lve"] < OFFSET_M**2 / 20
    assert abs(metrics["fdd"]) < 1e-4


def test_generation_puts_the_motion_on_a_chosen_subject(dataset, trained):
    talker = Talker.from_checkpoint(trained)
    assert set(talker.subjects) == {SUBJECTS[1]}  # the first subject's face is the basis's own
    coeffs = talker.generate(load_clips(dataset, "test")[0].audio, SUBJECTS[1], steps=2)
    on_second = talker.vertices(coeffs, subject=SUBJECTS[1])
    on_first = talker.vertices(coeffs)
    np.testing.assert_allclose(on_second - on_first, OFFSET_M, atol=1e-6)
    with pytest.raises(Exception, match="unknown subject"):
        talker.vertices(coeffs, subject="nobody")


def test_talker_animate_puts_the_motion_on_the_chosen_subject(folder, trained, tmp_path, capsys):
    from talker.cli import main

    wav, npz = folder / "wav" / f"{SUBJECTS[0]}_sentence37.wav", tmp_path / "motion.npz"
    args = ["animate", str(wav), "--checkpoint", str(trained), "--steps", "2", "--out", str(npz)]
    assert main([*args, "--subject", SUBJECTS[1]]) == 0
    with np.load(npz) as z:
        talker = Talker.from_checkpoint(trained)
        np.testing.assert_allclose(z["template"], talker.subjects[SUBJECTS[1]])
        np.testing.assert_allclose(z["vertices"],
                                   talker.vertices(z["coeffs"], subject=SUBJECTS[1]), atol=1e-6)
        assert float(z["fps"]) == 30 and z["faces"].shape[1] == 3
    assert main([*args, "--subject", "nobody"]) == 2
    assert "--subject nobody: not a subject of this model" in capsys.readouterr().err
