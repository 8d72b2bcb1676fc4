"""The model commands end to end on a tiny corpus (talker corpus/train/distill/eval/animate),
and the shipped default model's behaviour on silence and speech."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from models.net.talker import Talker
from models.training.evaluate import markdown_table

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "weights" / "default.safetensors"


def talker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "talker", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"talker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_run")
    talker("corpus", "--out", str(root / "corpus"), "--talkers", "3", "--utterances", "4",
           "--seed", "3", "--quiet")
    talker("train", "--data", str(root / "corpus"), "--out", str(root / "teacher"),
           "--preset", "tiny", "--seed", "0", "--audio-dropout", "0.2", "--quiet")
    talker("train", "--data", str(root / "corpus"), "--out", str(root / "regression"),
           "--preset", "tiny", "--seed", "0", "--objective", "regression", "--threads", "1",
           "--quiet")
    talker("distill", "--teacher", str(root / "teacher" / "talker.safetensors"), "--data",
           str(root / "corpus"), "--out", str(root / "student"), "--steps", "2", "--preset",
           "tiny", "--guidance", "2", "--quiet")
    return root


def speech_wav(path: Path, text: str = "Hello there. How are you?") -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path


def test_train_distill_eval_animate(tiny_run: Path, tmp_path: Path) -> None:
    student = tiny_run / "student" / "student_2.safetensors"
    assert student.is_file()
    out = tmp_path / "eval.json"
    talker("eval", "--checkpoint", str(student), "--teacher",
           str(tiny_run / "teacher" / "talker.safetensors"), "--steps", "2", "--guidance", "2",
           "--baseline",
           str(tiny_run / "regression" / "talker.safetensors"), "--data",
           str(tiny_run / "corpus"), "--json", str(out), "--max-utterances", "2")
    results = json.loads(out.read_text())
    for row in results["rows"].values():
        for metrics in row.values():
            assert metrics["lve"] > 0 and "lip (" in metrics["masks"]["lip"]
    assert {"teacher_ddpm500", "teacher_ddim2", "teacher_ddim2_g2", "checkpoint_ddim2",
            "regression"} <= set(results["rows"])
    # guided teacher -> unguided student (one pass per step); the scale it learnt is recorded
    assert results["checkpoint_guidance"] == 1.0 and results["config"]["guidance"] == [2.0]
    assert Talker.from_checkpoint(tiny_run / "teacher" / "talker.safetensors").config.loss \
        .audio_dropout == 0.2
    assert results["window_1s_cpu_ms"]["regression"]["p50"] > 0
    spread = results["diversity_m"]  # different seeds: samplers differ, regression cannot
    assert spread["regression"] == 0.0 and spread["teacher_ddpm500"] > 0
    assert "| diversity (m) |" in markdown_table(results)
    # articulation: every row, own identity; the checkpoint with the default identity too
    split, row = next(iter(results["rows"]["checkpoint_ddim2"].items()))
    art = row["articulation"]
    assert art["true"]["bilabial_closure"] == 1.0 and art["true"]["bilabials"] > 0
    assert 0 <= art["pred"]["bilabial_closure"] <= 1 and art["p90_gap_ratio"] > 0
    assert set(results["articulation_default_identity"]) == set(results["rows"]["regression"])
    assert f"checkpoint_ddim2/default/{split}" in results["summary"]["articulation"]
    assert "| articulation: model / sampler |" in markdown_table(results)
    # a student can be distilled further: 2 -> 1 step, continuing from student_2
    talker("distill", "--teacher", str(student), "--start-steps", "2", "--steps", "1", "--data",
           str(tiny_run / "corpus"), "--out", str(tmp_path / "more"), "--preset", "tiny",
           "--quiet")
    assert Talker.from_checkpoint(tmp_path / "more" / "student_1.safetensors").config \
        .sampler_steps == 1
    wrong = talker("eval", "--checkpoint", str(student), "--baseline", str(student), "--data",
                   str(tiny_run / "corpus"), "--json", str(tmp_path / "x.json"), check=False)
    assert wrong.returncode == 2 and "is not a regression checkpoint" in wrong.stderr
    unguided = talker("eval", "--checkpoint", str(student), "--guidance", "2", "--data",
                      str(tiny_run / "corpus"), "--json", str(tmp_path / "x.json"), check=False)
    assert unguided.returncode == 2 and "--guidance adds teacher rows" in unguided.stderr
    quick = tmp_path / "quick.json"  # the fast comparison: no DDPM row, chosen splits only
    talker("eval", "--checkpoint", str(student), "--teacher",
           str(tiny_run / "teacher" / "talker.safetensors"), "--steps", "2", "--no-ddpm",
           "--splits", "heldout_voice", "--data", str(tiny_run / "corpus"), "--json", str(quick),
           "--max-utterances", "1")
    rows = json.loads(quick.read_text())["rows"]
    assert set(rows) == {"checkpoint_ddim2", "teacher_ddim2"}
    assert set(rows["teacher_ddim2"]) <= {"test", "heldout_voice"}
    wav = speech_wav(tmp_path / "s.wav")
    npz = tmp_path / "motion.npz"
    talker("animate", str(wav), "--out", str(npz), "--checkpoint", str(student),
           "--identity", "auto", "--guidance", "1.5")
    with np.load(npz) as z:
        rate, audio = wavfile.read(wav)
        frames = int(np.ceil(len(audio) / rate * 30))
        assert z["coeffs"].shape == (frames, 51)
        assert z["vertices"].shape == (frames, *z["template"].shape)
        np.testing.assert_allclose(z["vertices"][0], z["template"], atol=0.05)  # a face, in m


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = talker("animate", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o.npz"),
                    check=False)
    assert result.returncode == 2 and "no such audio file" in result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    wav = speech_wav(tmp_path / "s.wav", "Hi.")
    result = talker("animate", str(wav), "--out", str(tmp_path / "o.npz"), "--checkpoint",
                    str(bad), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr
    result = talker("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"),
                    check=False)
    assert result.returncode == 2 and "talker corpus --out" in result.stderr


def test_the_look_ahead_is_trained_and_declared_by_the_checkpoint(tiny_run: Path,
                                                                   tmp_path: Path) -> None:
    """--lookahead-frames sets how much future audio the model hears; its contract says so."""
    shipped_like = Talker.from_checkpoint(tiny_run / "teacher" / "talker.safetensors")
    talker("train", "--data", str(tiny_run / "corpus"), "--out", str(tmp_path / "la1"),
           "--preset", "tiny", "--steps", "2", "--lookahead-frames", "1", "--quiet")
    short = Talker.from_checkpoint(tmp_path / "la1" / "talker.safetensors")
    assert short.receptive_field[1] == 1 and shipped_like.receptive_field[1] == 3
    assert short.contract.lookahead_s < shipped_like.contract.lookahead_s - 0.06
    result = talker("train", "--data", str(tiny_run / "corpus"), "--out", str(tmp_path / "x"),
                    "--preset", "tiny", "--lookahead-frames", "99", check=False)
    assert result.returncode == 2 and "exceeds the encoder's reach" in result.stderr


def test_colour_augmentation_is_a_recorded_training_knob(tiny_run: Path, tmp_path: Path) -> None:
    """--augment-colour reaches the training loop's augmentation and the checkpoint says so;
    a preset that trains without augmentation refuses it."""
    from models.net.checkpoint import load_checkpoint

    talker("train", "--data", str(tiny_run / "corpus"), "--out", str(tmp_path / "c"),
           "--preset", "default", "--steps", "1", "--augment-colour", "0.4", "--threads", "1",
           "--quiet")
    meta = load_checkpoint(tmp_path / "c" / "talker.safetensors")[2]
    assert json.loads(meta["train_config"])["loop"]["augment"]["p_colour"] == 0.4
    result = talker("train", "--data", str(tiny_run / "corpus"), "--out", str(tmp_path / "x"),
                    "--preset", "tiny", "--augment-colour", "0.4", check=False)
    assert result.returncode == 2 and "trains without augmentation" in result.stderr


def _lip_gap(vertices: np.ndarray) -> np.ndarray:
    from models.face.load import load_rig

    upper, lower = load_rig("facecap").mouth_open
    return np.linalg.norm(vertices[:, upper] - vertices[:, lower], axis=-1)


def test_shipped_model_keeps_the_mouth_closed_in_silence_and_opens_it_for_speech(
        tmp_path: Path) -> None:
    assert DEFAULT.is_file(), "the shipped model is missing: run `make train-default`"
    rate = 16000
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "Bob ate a big apple at the market."],
                   check=True)
    r, audio = wavfile.read(speech)
    audio = audio.astype(np.float32) / 32768
    from realtime.audio import resample

    audio = resample(audio, r, rate)
    silence = np.zeros(rate, np.float32)
    noise = np.random.default_rng(0).normal(0, 0.003, rate).astype(np.float32)  # room hiss
    clip = np.concatenate([silence, audio, noise])
    wav = tmp_path / "clip.wav"
    wavfile.write(wav, rate, (clip * 32767).astype(np.int16))
    npz = tmp_path / "m.npz"
    talker("animate", str(wav), "--out", str(npz))
    with np.load(npz) as z:
        gap = _lip_gap(z["vertices"]) * 1000  # mm
    n_sil = 30 - 6  # frames of the leading second, minus the look-ahead's anticipation
    speech_frames = slice(30 + 6, 30 + int(len(audio) / rate * 30) - 6)
    tail = slice(-24, None)
    assert np.median(gap[:n_sil]) < 3.0, gap[:n_sil]
    assert np.median(gap[tail]) < 3.0, gap[tail]
    assert np.percentile(gap[speech_frames], 90) > 8.0, gap[speech_frames]
