"""The shared optimiser loop: schedules, steps, log lines, stopping and continuing."""

import json

import pytest
import torch

from models.training.loop import LoopConfig, optimise, optimizer, warmup_constant, warmup_cosine

torch.set_num_threads(1)


def test_warmup_cosine_decays_to_a_tenth():
    lr = warmup_cosine(1.0, 4, 14)
    assert [lr(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr(9) == pytest.approx(0.55)  # half way through the decay
    assert lr(14) == pytest.approx(0.1) and lr(100) == pytest.approx(0.1)


def test_warmup_constant_stays_at_lr():
    lr = warmup_constant(2.0, 4)
    assert [lr(i) for i in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def _run(out, steps, stop=None):
    """A scalar weight pulled towards 3; batch b adds a term "const" = b, to check the means."""
    out.mkdir()
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    config = LoopConfig(lr=0.1, warmup_steps=1, weight_decay=0.0, log_every=2)

    def loss_fn(batch):
        return {"loss": ((model.weight - 3.0) ** 2).sum(), "const": torch.tensor(float(batch))}

    done = []
    for step in optimise(model, optimizer(model, config), loss_fn, lambda: len(done),
                         lambda i: 0.1, config, out, steps, progress=False, tags={"round": 7}):
        done.append(step)
        if step == stop:
            break
    return done, [json.loads(line) for line in open(out / "log.jsonl")]


def test_steps_are_counted_and_logged_with_tags_and_means(tmp_path):
    done, records = _run(tmp_path / "a", range(4))
    assert done == [1, 2, 3, 4]
    assert [(r["round"], r["step"], r["lr"], r["const"]) for r in records] == [
        (7, 2, 0.1, 0.5), (7, 4, 0.1, 2.5)]  # batches 0, 1 then 2, 3
    assert records[1]["loss"] < records[0]["loss"]


def test_leaving_early_stops_and_a_range_continues(tmp_path):
    done, records = _run(tmp_path / "a", range(10), stop=3)
    assert done == [1, 2, 3] and [r["step"] for r in records] == [2]
    done, records = _run(tmp_path / "b", range(6, 8))
    assert done == [7, 8] and [r["step"] for r in records] == [8]
