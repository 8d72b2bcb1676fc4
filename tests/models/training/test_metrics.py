"""Metrics on hand-made arrays with known answers (DESIGN §2 definitions)."""

import numpy as np
import pytest

from models.training.metrics import diversity, evaluate, fdd, lve, mve, upper_face_dynamics

LIP = np.array([True, True, False, False])
UPPER = np.array([False, False, True, True])
TEMPLATE = np.zeros((4, 3))


def test_lve_is_mean_over_frames_of_max_lip_squared_error():
    gt = np.zeros((2, 4, 3))
    pred = np.zeros((2, 4, 3))
    pred[0, 0] = [1, 0, 0]  # frame 0: lip errors 1 and 0 -> max 1
    pred[0, 1] = [0, 0.5, 0]
    pred[1, 1] = [0, 2, 0]  # frame 1: lip errors 0 and 4 -> max 4
    pred[1, 3] = [9, 9, 9]  # not a lip vertex: ignored
    assert lve(pred, gt, LIP) == pytest.approx((1 + 4) / 2)


def test_lve_pools_frames_across_sequences():
    a_gt, a_pred = np.zeros((1, 4, 3)), np.zeros((1, 4, 3))
    a_pred[0, 0] = [3, 0, 0]  # one frame, error 9
    b_gt, b_pred = np.zeros((3, 4, 3)), np.zeros((3, 4, 3))  # three frames, error 0
    assert lve([a_pred, b_pred], [a_gt, b_gt], LIP) == pytest.approx(9 / 4)


def test_upper_face_dynamics_and_signed_fdd():
    gt = np.zeros((4, 4, 3))
    gt[:, 2, 0] = [0, 1, 0, 1]  # squared displacement 0,1,0,1 -> std 0.5
    gt[:, 3, 1] = [0, 0, 0, 0]  # std 0
    assert upper_face_dynamics(gt, TEMPLATE, UPPER) == pytest.approx(0.25)
    still = np.zeros_like(gt)
    assert fdd(still, gt, TEMPLATE, UPPER) == pytest.approx(0.25)  # prediction too still: > 0
    assert fdd(gt, still, TEMPLATE, UPPER) == pytest.approx(-0.25)
    assert fdd([still, gt], [gt, gt], TEMPLATE, UPPER) == pytest.approx(0.125)


def test_mve_and_diversity():
    gt = np.zeros((2, 4, 3))
    pred = np.zeros((2, 4, 3))
    pred[:, :, 2] = 3.0
    pred[0, 0] = [3, 4, 0]  # distance 5 at one of 8 vertex-frames, 3 elsewhere
    assert mve(pred, gt) == pytest.approx((5 + 7 * 3) / 8)
    s = np.zeros((3, 2, 4, 3))
    s[1, ..., 0] = 1.0
    s[2, ..., 0] = 3.0
    assert diversity(s) == pytest.approx((1 + 3 + 2) / 3)
    with pytest.raises(ValueError):
        diversity(s[:1])


def test_evaluate_names_its_masks():
    gt = np.zeros((3, 4, 3))
    r = evaluate([gt], [gt], TEMPLATE, {"lip": LIP, "upper_face": UPPER}, "facecap")
    assert r["lve"] == 0 and r["fdd"] == 0 and r["mve"] == 0
    assert r["masks"] == {"lip": "facecap:lip (2 vertices)",
                          "upper_face": "facecap:upper_face (2 vertices)"}
    assert r["n_sequences"] == 1 and r["n_frames"] == 3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        lve(np.zeros((2, 4, 3)), np.zeros((3, 4, 3)), LIP)
