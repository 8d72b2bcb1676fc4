"""Schedule and samplers against an analytic Gaussian denoiser; distillation target; noise rule."""

import math

import numpy as np
import pytest
import torch

from models.sampling import (
    ScheduleConfig,
    Steps,
    cosine_alpha_bar,
    ddim_step,
    frame_noise,
    noise_generators,
    q_sample,
    respace,
    sample_ddim,
    sample_ddpm,
)
from models.training.distill import two_step_target

AB = cosine_alpha_bar(ScheduleConfig())
MU, S = 0.7, 0.3  # data x0 ~ N(MU, S^2) in every coordinate


def gaussian_x0(x_t, t, cond):
    """Exact E[x0 | x_t] for Gaussian data: the ideal x0-predicting network."""
    ab = float(AB[t])
    return (math.sqrt(ab) * S ** 2 * x_t + (1 - ab) * MU) / (ab * S ** 2 + 1 - ab)


def test_cosine_schedule_shape():
    assert AB.shape == (500,)
    assert torch.all(AB[1:] < AB[:-1])
    assert AB[0] > 0.999 and AB[-1] < 1e-4


def test_respace_grids_are_nested_and_end_near_clean():
    for n in [64, 32, 16, 8, 4, 2]:
        big, small = respace(AB, 2 * n), respace(AB, n)
        assert small.t == big.t[::2]
        assert small.t[0] == 499 and len(small) == n
    assert respace(AB, 500).t == tuple(range(499, -1, -1))
    with pytest.raises(ValueError):
        respace(AB, 0)


@pytest.mark.parametrize("n_steps", [100, 500])
def test_ddim_reproduces_the_data_distribution(n_steps):
    x_T = torch.randn(4000, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = sample_ddim(gaussian_x0, x_T, respace(AB, n_steps), None)
    assert abs(x0.mean().item() - MU) < 0.02
    assert abs(x0.std().item() - S) < 0.01


def test_ddim_with_exact_denoiser_is_the_linear_flow_map():
    # For Gaussian data the probability-flow ODE maps x_T to MU + S x_T; DDIM with many steps too.
    x_T = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None, None]
    x0 = sample_ddim(gaussian_x0, x_T, respace(AB, 500), None)
    torch.testing.assert_close(x0, MU + S * x_T, atol=5e-3, rtol=0)


def test_ddpm_reproduces_the_data_distribution():
    # Ancestral sampling with the posterior variance (Ho et al.'s lower bound) is exact only as the
    # grid approaches all T steps: 100 steps give std 0.284, 500 steps 0.296 (0.3 * 0.99 from the
    # final step returning the posterior mean).
    g = torch.Generator().manual_seed(1)
    steps = respace(AB, 500)
    x_T = torch.randn(4000, 1, 1, generator=g, dtype=torch.float64)
    noise = torch.randn((len(steps),) + tuple(x_T.shape), generator=g, dtype=torch.float64)
    x0 = sample_ddpm(gaussian_x0, x_T, steps, None, noise=noise)
    assert abs(x0.mean().item() - MU) < 0.02
    assert abs(x0.std().item() - S) < 0.01


def test_ddim_step_eta1_is_the_ddpm_posterior():
    # respaced one-step posterior variance (1-ab')/(1-ab) * (1 - ab/ab')
    ab, ab2 = 0.5, 0.8
    x_t, x0 = torch.tensor([0.3]), torch.tensor([0.1])
    a = ddim_step(x_t, x0, ab, ab2, 1.0, torch.tensor([0.0]))
    b = ddim_step(x_t, x0, ab, ab2, 1.0, torch.tensor([1.0]))
    var = (1 - ab2) / (1 - ab) * (1 - ab / ab2)
    assert abs((b - a).item() - math.sqrt(var)) < 1e-6
    beta = 1 - ab / ab2  # posterior mean coefficients of Ho et al., eq. 7
    mean = (math.sqrt(ab2) * beta / (1 - ab) * 0.1
            + math.sqrt(1 - beta) * (1 - ab2) / (1 - ab) * 0.3)
    assert abs(a.item() - mean) < 1e-6


def test_inpainting_keeps_the_prefix():
    x_T = torch.randn(2, 10, 3)
    prefix = torch.randn(2, 4, 3)
    seen = []

    def model_fn(x, t, cond):
        seen.append(x[:, :4].clone())
        return torch.zeros_like(x)

    steps = respace(AB, 8)
    out = sample_ddim(model_fn, x_T, steps, None, prefix=prefix)
    torch.testing.assert_close(out[:, :4], prefix)
    assert torch.all(out[:, 4:] == 0)
    # the model saw the prefix noised to each step's level with x_T's noise for those frames
    for i, x in enumerate(seen):
        torch.testing.assert_close(x, q_sample(prefix, steps.alpha_bar[i], x_T[:, :4]))


def test_callback_sees_every_step():
    calls = []
    sample_ddim(gaussian_x0, torch.zeros(1, 2, 1), respace(AB, 8), None, callback=calls.append)
    assert [c["i"] for c in calls] == list(range(8))
    assert [c["t"] for c in calls] == list(respace(AB, 8).t)


def test_two_step_distillation_target_equals_two_teacher_ddim_steps():
    torch.manual_seed(0)
    W = torch.randn(3, 3) * 0.3

    def teacher(x, t, cond):  # any nonlinear x0 predictor
        return torch.tanh(x @ W + 0.001 * t) + cond

    teacher_steps = respace(AB, 16)
    cond = torch.randn(2, 5, 3) * 0.1
    for i in [0, 3, 7]:  # student step i of 8 = teacher steps 2i and 2i+1
        x_t = torch.randn(2, 5, 3, dtype=torch.float64).float()
        target = two_step_target(teacher, x_t, teacher_steps, i, cond)
        # two explicit teacher steps through the sampler itself
        sub = Steps(teacher_steps.t[2 * i:2 * i + 2], teacher_steps.alpha_bar[2 * i:2 * i + 2])
        trace = []
        sample_ddim(teacher, x_t, sub, cond, callback=trace.append)
        ab0, ab2 = teacher_steps.alpha_bar[2 * i], teacher_steps.next_alpha_bar(2 * i + 1)
        x_two = ddim_step(trace[0]["x"], trace[1]["x0"], teacher_steps.alpha_bar[2 * i + 1], ab2) \
            if ab2 < 1 else trace[1]["x0"]
        one = ddim_step(x_t, target, ab0, ab2) if ab2 < 1 else target
        torch.testing.assert_close(one, x_two, atol=1e-4, rtol=1e-4)


def test_frame_noise_per_hop_equals_whole_sequence():
    whole = frame_noise(noise_generators(42)[0], 30, 51)
    rng, parts = noise_generators(42)[0], []
    for n in [3, 3, 1, 5, 3, 15]:
        parts.append(frame_noise(rng, n, 51))
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # DDPM per-step noise: (n, S, K) per hop in frame order, same invariance
    g = noise_generators(42)[1]
    whole = g.standard_normal((30, 8, 51))
    g = noise_generators(42)[1]
    parts = [g.standard_normal((n, 8, 51)) for n in [3, 9, 18]]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert not np.array_equal(frame_noise(noise_generators(43)[0], 3, 51),
                              frame_noise(noise_generators(42)[0], 3, 51))
