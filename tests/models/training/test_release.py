"""``make train-default``'s script end to end at the tiny preset: every stage runs as the talker
command it records, the recipe's knobs reach their commands, and the shipped folder gets a
loadable model with its manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from models.net.checkpoint import load_checkpoint
from models.net.talker import Talker
from models.training.release import REPO


def test_the_release_recipe_runs_end_to_end_and_says_how(tmp_path: Path) -> None:
    readme = (REPO / "models" / "README.md").read_text()
    out = tmp_path / "weights"
    cmd = [sys.executable, "-m", "models.training.release", "--work", str(tmp_path / "work"),
           "--out", str(out), "--preset", "tiny", "--talkers", "3", "--utterances", "4",
           "--student-steps", "2", "--heldout-synth", "1", "--audio-dropout", "0.2",
           "--gap-loss", "0.05", "--guidance", "2", "--gt-weight", "0.25", "--train-flite", "1"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((out / "default.json").read_text())
    stages = {c["stage"]: c["command"] for c in manifest["commands"]}
    assert list(stages) == ["corpus", "train", "baseline", "distill", "eval"]
    assert "--heldout-synth 1 --train-flite 1" in stages["corpus"]
    assert "--audio-dropout 0.2 --gap-loss 0.05" in stages["train"]
    assert "--audio-dropout" not in stages["baseline"]  # the regression baseline stays plain
    assert "--guidance 2.0 --gt-weight 0.25" in stages["distill"]
    assert "--guidance 2.0" in stages["eval"]
    student = tmp_path / "work" / "student" / "student_2.safetensors"
    assert json.loads(load_checkpoint(student)[2]["distill_config"])["gt_weight"] == 0.25
    shipped = Talker.from_checkpoint(out / "default.safetensors")
    assert shipped.config.sampler_steps == 2 and shipped.config.loss.gap == 0.05
    assert "heldout_synth" in manifest["metrics"]["checkpoint_ddim2"]
    assert (REPO / "models" / "README.md").read_text() == readme  # not the shipped folder
