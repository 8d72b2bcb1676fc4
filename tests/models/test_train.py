"""Training and distillation on the toy corpus with the tiny presets."""

import json

import numpy as np
import torch

from models.distill import DistillConfig, distill
from models.talker import Talker
from models.train import ToyDataset, TrainConfig, WindowSampler, load_clips, train

torch.set_num_threads(1)


def _losses(out):
    return [r["loss"] for r in map(json.loads, open(out / "log.jsonl")) if "loss" in r]


def test_tiny_training_lowers_the_loss_and_writes_checkpoints(tmp_path):
    data = ToyDataset(n_talkers=2, n_utterances=3, seconds=1.5)
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
    data = ToyDataset(n_talkers=2, n_utterances=2, seconds=1.0)
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


def test_window_sampler_context_and_mask():
    data = ToyDataset(n_talkers=1, n_utterances=2, seconds=0.5)
    clips = load_clips(data, "train", ("toy0",))
    s = WindowSampler(clips, 24, __import__("models.features").features.FeatureConfig(),
                      (3, 3), p_start=1.0)
    b = s.batch(2, np.random.default_rng(0))
    assert b.features.shape == (2, 6 + 24, 320)
    assert b.mask.sum(1).tolist() == [15, 15]  # 0.5 s = 15 frames, window 24


def test_distillation_halves_to_the_target_steps(tmp_path):
    data = ToyDataset(n_talkers=2, n_utterances=2, seconds=1.0)
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
