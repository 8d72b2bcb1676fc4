"""The optimiser loop that teacher training and distillation share, and the knobs it reads.

    opt = optimizer(model, config)
    for step in optimise(model, opt, loss_fn, batches, schedule, config, out, range(start, n)):
        ...  # after each step: validation, checkpoints, stopping (the caller's business)

One step: the model in train mode, the learning rate ``schedule(i)`` for step index i, one batch,
``loss_fn(batch)``'s terms, backward on ``terms["loss"]``, gradient clipping, AdamW. Every
``log_every`` steps one line goes to ``out/log.jsonl`` (and the logger): the step count, the lr of
its last step, the seconds since the loop began and the mean of every term over those steps.
The loop draws no random numbers of its own: the batches and the loss do, from the caller's
generators (``generators``), so the same seed gives the same run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.data.augment import AugmentConfig
from models.net.talker import TrainBatch

log = logging.getLogger(__name__)

Schedule = Callable[[int], float]  # step index (0 = the first step) -> learning rate
LossFn = Callable[[TrainBatch], dict[str, torch.Tensor]]  # terms, "loss" among them


@dataclass(frozen=True)
class LoopConfig:
    """What a training loop chooses: its windows, its optimiser, its log and its data splits.
    The defaults are the teacher's; DistillConfig keeps its own."""

    batch_size: int = 32
    window_frames: int = 64  # 2.1 s: longer than the encoder's 1 s reach, short enough to batch
    p_window_at_start: float = 0.25  # streams start from silence: train that case often
    # Real microphones, noise, pitch, pauses (models/data/augment.py): the model must hear what
    # users send. None: the corpus audio as it is (tests).
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    lr: float = 3e-4  # peak learning rate, reached at the end of the warm-up
    warmup_steps: int = 1000  # linear warm-up: Adam's moment estimates are poor at first
    weight_decay: float = 0.01  # AdamW's
    grad_clip: float = 1.0  # max global gradient norm
    log_every: int = 100  # steps per log line (means over them)
    val_utterances: int = 32  # validation utterances per evaluation: LVE is costly to sample
    train_split: str = "train"
    val_split: str = "val"


def warmup_cosine(lr: float, warmup_steps: int, n_steps: int) -> Schedule:
    """Linear warm-up, then cosine decay to 10 % of ``lr`` at ``n_steps`` (the teacher)."""

    def at(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        p = (step - warmup_steps) / max(1, n_steps - warmup_steps)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))

    return at


def warmup_constant(lr: float, warmup_steps: int) -> Schedule:
    """Linear warm-up, then constant (a distillation round: the student starts at its teacher,
    it only has to learn the halved grid)."""
    return lambda step: lr * min(1.0, (step + 1) / warmup_steps)


def generators(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """A run's random streams from ``seed``: numpy's (windows, augmentation) and torch's
    (timesteps, noise) are returned; torch's global one (weight init, dropout) is seeded."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def optimizer(model: nn.Module, config: LoopConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def optimise(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn,
             batches: Callable[[], TrainBatch], schedule: Schedule, config: LoopConfig,
             out: Path, steps: range, progress: bool = True,
             tags: dict[str, Any] | None = None) -> Iterator[int]:
    """Run one optimiser step per index in ``steps`` and yield the number of steps done after
    each (``i + 1``). ``steps.start`` > 0 continues a run (the optimiser's state is the
    caller's to restore); leaving the iteration early stops the loop. ``tags`` go first in every
    log line (e.g. the distillation round)."""
    bar = _progress_bar(progress, steps.start, steps.stop)
    t0, running = time.monotonic(), {}
    try:
        for i in steps:
            model.train()
            lr = schedule(i)
            for group in opt.param_groups:
                group["lr"] = lr
            terms = loss_fn(batches())
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            if bar is not None:
                bar.update(1)
            if (i + 1) % config.log_every == 0:
                append_log(out, {**(tags or {}), "step": i + 1, "lr": lr,
                                 "s": round(time.monotonic() - t0, 2),
                                 **{k: v / config.log_every for k, v in running.items()}})
                running = {}
            yield i + 1
    finally:
        if bar is not None:
            bar.close()


def append_log(out: Path, record: dict[str, Any]) -> None:
    """One line of ``out/log.jsonl`` (appended: a resumed run continues its log)."""
    log.info("%s", record)
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def _progress_bar(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, dynamic_ncols=True)


__all__ = ["LoopConfig", "LossFn", "Schedule", "append_log", "generators", "optimise",
           "optimizer", "warmup_constant", "warmup_cosine"]
