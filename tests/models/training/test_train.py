"""Training and distillation on the toy corpus with the tiny presets."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.data.toy import toy_dataset
from models.data.windows import WindowSampler, load_clips
from models.errors import ModelError
from models.net.checkpoint import load_checkpoint
from models.net.features import FeatureConfig
from models.net.talker import LossConfig, Talker
from models.training.distill import DistillConfig, distill, distill_loss, with_steps
from models.training.train import TrainConfig, train

torch.set_num_threads(1)


def _losses(out):
    return [r["loss"] for r in map(json.loads, open(out / "log.jsonl")) if "loss" in r]


def test_tiny_training_lowers_the_loss_and_writes_checkpoints(tmp_path):
    data = toy_dataset(n_talkers=2, n_utterances=3, seconds=1.5)
    path = train(data, TrainConfig.preset("tiny"), tmp_path, seed=0, progress=False)
    losses = _losses(tmp_path)
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert any("val" in r and r["val"]["lve"] >= 0 for r in records)
    for name in ["talker.safetensors", "last.safetensors", "best.safetensors", "last.state.pt"]:
        assert (tmp_path / name).exists()
    talker = Talker.from_checkpoint(path)
    assert talker.identities == ["toy0", "toy1"] and talker.config.sampler_steps == 8
    c = talker.generate(data.utterances("val")[0].audio, "toy1", seed=0)
    assert np.isfinite(c).all()


def test_training_is_reproducible_and_resumes(tmp_path):
    data = toy_dataset(n_talkers=2, n_utterances=2, seconds=1.0)
    cfg = TrainConfig.preset("tiny")
    short = cfg.__class__(**{**cfg.__dict__, "n_steps": 20, "val_every": 1000})
    train(data, short, tmp_path / "a", seed=3, progress=False)
    train(data, short, tmp_path / "b", seed=3, progress=False)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    # resume: 10 steps, then continue to 20 from last.safetensors + last.state.pt
    assert train(data, short, tmp_path / "c", seed=3, progress=False, stop_at=10).name == \
        "last.safetensors"
    train(data, short, tmp_path / "c", seed=3, progress=False)
    np.testing.assert_allclose(_losses(tmp_path / "c"), _losses(tmp_path / "a"), rtol=1e-4)


# log.jsonl of the runs in test_loss_logs_are_pinned, recorded before train and distill shared
# one optimiser loop (models/training/loop.py): (step, lr, loss) of the teacher, (round, step,
# loss) of the student. Bit-exact on the machine that recorded them; the tolerance is for other
# CPUs' summation order. Another batch, schedule or random stream moves them by far more.
TEACHER_LOG = [(10, 0.0025533263185844586, 0.34417411386966706),
               (20, 0.00032950073900936237, 0.2758251577615738)]
STUDENT_LOG = [(4, 5, 0.06260131895542145), (4, 10, 0.04402406066656113),
               (2, 5, 0.03917791172862053), (2, 10, 0.03156526163220406)]


def test_loss_logs_are_pinned(tmp_path):
    data = toy_dataset(n_talkers=2, n_utterances=2, seconds=1.0)
    cfg = TrainConfig.preset("tiny")
    teacher = train(data, cfg.__class__(**{**cfg.__dict__, "n_steps": 20, "val_every": 1000}),
                    tmp_path / "t", seed=0, progress=False)
    distill(teacher, data, tmp_path / "s", steps=2, config=DistillConfig.preset("tiny"), seed=0,
            progress=False)
    teacher_log = [(r["step"], r["lr"], r["loss"]) for r in _records(tmp_path / "t")]
    student_log = [(r["round_steps"], r["step"], r["loss"]) for r in _records(tmp_path / "s")
                   if "loss" in r]
    np.testing.assert_allclose(teacher_log, TEACHER_LOG, rtol=1e-5)
    np.testing.assert_allclose(student_log, STUDENT_LOG, rtol=1e-5)


def _records(out):
    return [json.loads(line) for line in open(out / "log.jsonl")]


def test_window_sampler_context_and_mask():
    data = toy_dataset(n_talkers=1, n_utterances=2, seconds=0.5)
    clips = load_clips(data, "train", ("toy0",))
    s = WindowSampler(clips, 24, FeatureConfig(),
                      (3, 3), p_start=1.0)
    b = s.batch(2, np.random.default_rng(0))
    assert b.features.shape == (2, 6 + 24, 320)
    assert b.mask.sum(1).tolist() == [15, 15]  # 0.5 s = 15 frames, window 24


def test_distillation_halves_to_the_target_steps(tmp_path):
    data = toy_dataset(n_talkers=2, n_utterances=2, seconds=1.0)
    teacher = train(data, TrainConfig.preset("tiny").__class__(
        **{**TrainConfig.preset("tiny").__dict__, "n_steps": 10, "val_every": 1000}),
        tmp_path / "teacher", progress=False)
    path = distill(teacher, data, tmp_path / "student", steps=2,
                   config=DistillConfig.preset("tiny"), progress=False)
    assert path.name == "student_2.safetensors"
    assert (tmp_path / "student" / "student_4.safetensors").exists()
    student = Talker.from_checkpoint(path)
    assert student.config.sampler_steps == 2
    records = [json.loads(line) for line in open(tmp_path / "student" / "log.jsonl")]
    assert [r["round_steps"] for r in records if "student" in r] == [4, 2]


def test_regression_baseline_is_one_deterministic_step(tmp_path):
    """The results table's baseline: same network, no diffusion. It trains, lowers its loss,
    and generates the same motion whatever seed, sampler or step count is asked for."""
    data = toy_dataset(n_talkers=2, n_utterances=3, seconds=1.5)
    cfg = TrainConfig.preset("tiny").__class__(**{**TrainConfig.preset("tiny").__dict__,
                                                  "objective": "regression"})
    path = train(data, cfg, tmp_path, seed=0, progress=False)
    losses = _losses(tmp_path)
    assert losses[-1] < 0.7 * losses[0]
    model = Talker.from_checkpoint(path)
    assert model.is_regression and model.config.sampler_steps == 1 and len(model.steps(8)) == 1
    audio = data.utterances("val")[0].audio
    a = model.generate(audio, "toy0", seed=0)
    b = model.generate(audio, "toy0", seed=7, steps=8, sampler="ddpm")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelError, match="regression model: there is no sampler to distill"):
        distill(path, data, tmp_path / "student", steps=2, config=DistillConfig.preset("tiny"),
                progress=False)


def test_anchored_distillation_adds_the_data_term(tmp_path):
    """gt_weight w: loss = teacher-target loss + w * the same losses against the real motion."""
    data = toy_dataset(n_talkers=2, n_utterances=2, seconds=1.0)
    teacher = Talker.from_checkpoint(train(data, TrainConfig.preset("tiny").__class__(
        **{**TrainConfig.preset("tiny").__dict__, "n_steps": 10, "val_every": 1000}),
        tmp_path / "teacher", progress=False))
    student = with_steps(teacher, 2)
    clips = load_clips(data, "train", tuple(teacher.identities))
    batch = WindowSampler(clips, 24, teacher.config.features, teacher.receptive_field,
                          p_start=0.5).batch(4, np.random.default_rng(0))

    def terms(w):
        return distill_loss(student, with_steps(teacher, 4), batch, 2,
                            torch.Generator().manual_seed(1), gt_weight=w)

    pure, anchored = terms(0.0), terms(0.5)
    assert "gt_loss" not in pure and float(anchored["gt_loss"].detach()) > 0
    torch.testing.assert_close(anchored["loss"], pure["loss"] + 0.5 * anchored["gt_loss"])
    # the teacher-target terms are untouched by the anchoring
    torch.testing.assert_close(anchored["rec"], pure["rec"])


def test_guided_distillation_of_an_audio_dropout_teacher(tmp_path):
    """Classifier-free guidance end to end: a teacher trained with audio dropout lowers its loss;
    a student distilled from it at guidance 2 records that scale, samples unguided (config
    guidance 1) and calls the denoiser once per step with its own batch, not the doubled one."""
    data = toy_dataset(n_talkers=2, n_utterances=3, seconds=1.5)
    tiny = TrainConfig.preset("tiny")
    cfg = tiny.__class__(**{**tiny.__dict__, "loss": LossConfig(audio_dropout=0.3),
                            "val_every": 1000})
    teacher = train(data, cfg, tmp_path / "t", seed=0, progress=False)
    losses = _losses(tmp_path / "t")
    assert losses[-1] < 0.7 * losses[0]
    assert Talker.from_checkpoint(teacher).config.loss.audio_dropout == 0.3
    path = distill(teacher, data, tmp_path / "s", steps=2,
                   config=replace(DistillConfig.preset("tiny"), guidance=2.0), progress=False)
    student = Talker.from_checkpoint(path)
    assert student.config.guidance == 1.0 and student.config.sampler_steps == 2
    assert json.loads(load_checkpoint(path)[2]["distill_config"])["guidance"] == 2.0
    sizes = []
    student.denoiser.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    states = [student.new_stream(s) for s in range(3)]
    for st in states:
        student.push_audio(st, data.utterances("val")[0].audio)
        student.flush(st)
    student.stream_step(states, 5)
    assert sizes == [3, 3]
    # an unguided distillation records the teacher's own scale
    plain = distill(teacher, data, tmp_path / "p", steps=4, config=DistillConfig.preset("tiny"),
                    progress=False)
    assert json.loads(load_checkpoint(plain)[2]["distill_config"])["guidance"] == 1.0


def test_guided_teacher_targets_differ(tmp_path):
    data = toy_dataset(n_talkers=2, n_utterances=2, seconds=1.0)
    teacher = Talker.from_checkpoint(train(data, TrainConfig.preset("tiny").__class__(
        **{**TrainConfig.preset("tiny").__dict__, "n_steps": 10, "val_every": 1000}),
        tmp_path / "teacher", progress=False))
    clips = load_clips(data, "train", tuple(teacher.identities))
    batch = WindowSampler(clips, 24, teacher.config.features, teacher.receptive_field,
                          p_start=0.5).batch(4, np.random.default_rng(0))

    def terms(g):
        return distill_loss(with_steps(teacher, 2), with_steps(teacher, 4), batch, 2,
                            torch.Generator().manual_seed(1), guidance=g)

    one, again, two = terms(1.0), terms(1.0), terms(2.0)
    torch.testing.assert_close(one["loss"], again["loss"], rtol=0, atol=0)
    assert not torch.allclose(one["loss"], two["loss"])
