"""The lip-gap loss: a linear map of the coefficients that is the articulation metric's gap."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.errors import ModelError
from models.face.basis import MotionBasis
from models.face.load import load_rig
from models.net.losses import LipGap, lip_gap_loss
from models.net.random_model import TINY
from models.net.talker import LossConfig, Talker, TalkerConfig, TrainBatch
from models.training.articulation import lip_gap


def test_lip_gap_is_the_articulation_gap_of_the_decoded_face() -> None:
    rig = load_rig("auto")
    gap = LipGap(torch.tensor(rig.basis.vectors), torch.tensor(rig.template), rig.mouth_open)
    c = np.random.default_rng(0).uniform(0, 0.6, (20, rig.basis.size)).astype(np.float32)
    measured = lip_gap(rig.basis.decode(c), rig.mouth_open)  # floored at 0
    assert np.maximum(gap(torch.from_numpy(c)).numpy(), 0) == pytest.approx(measured, abs=1e-6)
    jaw = np.zeros((1, rig.basis.size), np.float32)
    jaw[0, rig.blendshape_names.index("jawOpen")] = 1.0
    assert float(gap(torch.from_numpy(jaw))) > 0.01  # an open jaw opens the lips by cm


def test_closed_frames_weigh_more() -> None:
    rig = load_rig("auto")
    gap = LipGap(torch.tensor(rig.basis.vectors), torch.tensor(rig.template), rig.mouth_open)
    jaw = rig.blendshape_names.index("jawOpen")
    closed = torch.zeros(1, 2, rig.basis.size)  # the truth: lips together in both frames...
    closed[0, 1, jaw] = 0.5  # ...but the second frame opens
    pred = closed.clone()
    pred[..., jaw] += 0.05  # the same coefficient error in both frames
    plain = lip_gap_loss(pred, closed, gap, None, closed_boost=0.0)
    boosted = lip_gap_loss(pred, closed, gap, None, closed_boost=4.0)
    # only the first (closed) frame's half of the mean is weighted 5x
    assert float(boosted) == pytest.approx(3.0 * float(plain), rel=1e-4)


def _talker(loss: LossConfig, rig: str = "auto") -> Talker:
    face = load_rig(rig)
    config = TalkerConfig.build(TINY, face.blendshape_names, ("a", "b"), loss=loss)
    torch.manual_seed(0)
    return Talker(config, face.basis)


def test_the_training_loss_adds_the_gap_term_only_when_asked() -> None:
    g = torch.Generator().manual_seed(0)
    plain, gapped = _talker(LossConfig()), _talker(LossConfig(gap=0.1))
    F = plain.config.features.feature_dim
    left, right = plain.receptive_field
    batch = TrainBatch(torch.randn(2, left + right + 12, F, generator=g),
                       torch.rand(2, 12, plain.basis.size, generator=g) * 0.3,
                       torch.tensor([0, 1]), torch.ones(2, 12, dtype=torch.bool))
    with torch.no_grad():
        a = plain.loss(batch, torch.Generator().manual_seed(1))
        b = gapped.loss(batch, torch.Generator().manual_seed(1))
    assert "gap" not in a and float(b["gap"]) > 0
    assert float(b["loss"]) == pytest.approx(float(a["loss"]) + 0.1 * float(b["gap"]), rel=1e-5)


def test_a_basis_without_lip_shapes_cannot_have_the_gap_loss() -> None:
    rig = load_rig("auto")
    b = rig.basis
    pca = MotionBasis(b.template, b.vectors, tuple(f"pca_{k}" for k in range(b.size)), b.faces,
                      b.masks, b.fps, "pca")
    config = TalkerConfig.build(TINY, pca.names, ("a",), loss=LossConfig(gap=0.1))
    with pytest.raises(ModelError, match="lip-gap loss needs an ARKit basis"):
        Talker(config, pca)
    assert dataclasses.replace(config, loss=LossConfig()).loss.gap == 0.0
