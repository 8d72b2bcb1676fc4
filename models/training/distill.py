"""Progressive distillation (Salimans & Ho 2022) of the teacher into an 8-step student.

Each round the student (initialised from the current teacher, same network class) learns to do in
one DDIM step what the teacher does in two: the teacher grid has 2N steps, the student grid N
steps, every other teacher step (``respace`` grids are nested). The target is the x0 that makes a
single DDIM step from x_t land where the teacher's two steps land (``two_step_target``). Rounds
halve N: 64 -> 32 -> 16 -> 8 (and optionally 4, 2); the student of one round is the teacher of the
next. Samplers are untouched: the result is a checkpoint whose config says ``sampler_steps = N``.

Anchoring to the data (``gt_weight``): besides the teacher's target, the student's x0 is also
pulled towards the real motion that x_t was noised from, with the same vertex losses. Pure
distillation can at best copy the teacher's 2N-step sampler, and on this task the teacher's own
few-step DDIM already beats its many-step one on LVE (fewer steps stay closer to the conditional
mean); the data term lets each round specialise the student to its N noise levels instead of only
imitating a sampler that is worse than plain DDIM-N. ``gt_weight = 0`` is plain progressive
distillation.

Guidance (``guidance``, Meng et al. 2023's first stage folded into the first round): the first
round's targets come from the teacher sampled with classifier-free guidance g on the audio (each
teacher call runs [audio; null audio], ``Talker.guided``); the student learns them as a plain
conditional model, so its config says ``guidance = 1`` and it samples with one network pass per
step. Later rounds halve that student as usual (their teacher already carries the guidance). The
teacher should have been trained with ``LossConfig.audio_dropout`` > 0, or its null-audio
prediction means nothing.

    distill("runs/teacher/talker.safetensors", dataset, "runs/student", steps=8)

writes ``student_{N}.safetensors`` per round and ``log.jsonl``; returns the last student's path.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.data.windows import WindowSampler, load_clips
from models.errors import ModelError
from models.net.talker import Talker, TrainBatch
from models.sampling import ModelFn, Steps, ddim_step, q_sample, respace
from models.training.loop import (
    LoopConfig,
    append_log,
    generators,
    optimise,
    optimizer,
    warmup_constant,
)
from models.training.train import evaluate_talker

log = logging.getLogger(__name__)

# Students start at their teacher: small steps, a short warm-up, no weight decay. The teacher's
# augmentation stays on: the student must keep the teacher's robustness to real microphones, so
# it learns on the same kind of input.
STUDENT_LOOP = LoopConfig(lr=1e-4, warmup_steps=200, weight_decay=0.0)


@dataclass(frozen=True)
class DistillConfig:
    start_steps: int = 64  # the teacher is first respaced to this DDIM grid (DESIGN §2)
    iters_per_round: int = 4000
    gt_weight: float = 0.5  # data term next to the teacher term (module docstring); 0 = pure
    # The first round's teacher guidance scale (module docstring); None: the teacher checkpoint's
    # own (1 unless it says otherwise). ``distill`` records the value it used here.
    guidance: float | None = None
    loop: LoopConfig = STUDENT_LOOP  # each round's batches, optimiser, log and splits

    @staticmethod
    def preset(name: str) -> DistillConfig:
        if name == "default":  # about 20 minutes on the 2-core CPU machine
            return DistillConfig(iters_per_round=1000,
                                 loop=dataclasses.replace(STUDENT_LOOP, val_utterances=16))
        if name == "full":
            return DistillConfig()
        if name == "tiny":
            return DistillConfig(start_steps=8, iters_per_round=10, loop=dataclasses.replace(
                STUDENT_LOOP, batch_size=4, window_frames=24, augment=None, lr=1e-3,
                warmup_steps=2, log_every=5, val_utterances=1))
        raise ValueError(f"unknown preset {name!r}: use 'tiny', 'default' or 'full'")


def two_step_target(model_fn: ModelFn, x_t: torch.Tensor, teacher_steps: Steps, i: int,
                    cond: Any) -> torch.Tensor:
    """The x0 target for student step i: run teacher steps 2i and 2i+1 from x_t (at teacher step
    2i's noise level), then solve one DDIM step alpha_bar[2i] -> after(2i+1) for x0."""
    ab0, ab1 = teacher_steps.alpha_bar[2 * i], teacher_steps.alpha_bar[2 * i + 1]
    ab2 = teacher_steps.next_alpha_bar(2 * i + 1)
    x_mid = ddim_step(x_t, model_fn(x_t, teacher_steps.t[2 * i], cond), ab0, ab1)
    x0b = model_fn(x_mid, teacher_steps.t[2 * i + 1], cond)
    if ab2 >= 1.0:  # the last student step: its output is x0 itself
        return x0b
    x_next = ddim_step(x_mid, x0b, ab1, ab2)
    # DDIM: x_next = sqrt(ab2) x0 + c (x_t - sqrt(ab0) x0); solve for x0
    c = math.sqrt(1 - ab2) / math.sqrt(1 - ab0)
    return (x_next - c * x_t) / (math.sqrt(ab2) - c * math.sqrt(ab0))


def distill_loss(student: Talker, teacher: Talker, batch: TrainBatch, n_student: int,
                 generator: torch.Generator | None = None, gt_weight: float = 0.0,
                 guidance: float = 1.0) -> dict[str, torch.Tensor]:
    """One batch of one round: random student step, teacher target (the teacher sampled with
    classifier-free ``guidance``), vertex-space losses; plus ``gt_weight`` times the same losses
    against the real motion (``gt_loss``)."""
    s_steps, t_steps = respace(student.alpha_bar, n_student), respace(teacher.alpha_bar,
                                                                      2 * n_student)
    x0 = student.normalize(batch.coeffs)  # (B, W, K); both share the normalisation
    i = int(torch.randint(0, n_student, (1,), generator=generator))
    x_t = q_sample(x0, s_steps.alpha_bar[i], torch.randn(x0.shape, generator=generator))
    with torch.no_grad():
        cond = (teacher.encode_audio(batch.features), teacher.identity.vectors(batch.talker))
        target = two_step_target(lambda x, t, c: teacher.guided(x, t, c[0], c[1], guidance)[0],
                                 x_t, t_steps, i, cond)
    pred, _ = student(x_t, s_steps.t[i], student.encode_audio(batch.features),
                      student.identity.vectors(batch.talker))
    terms = student.motion_loss(pred, target, batch.mask)
    w = student.config.loss

    def total(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return w.rec * t["rec"] + w.lip * t["lip"] + w.vel * t["vel"] + w.gap * t.get("gap", 0.0)

    terms["loss"] = total(terms)
    if gt_weight > 0:
        terms["gt_loss"] = total(student.motion_loss(pred, x0, batch.mask))
        terms["loss"] = terms["loss"] + gt_weight * terms["gt_loss"]
    return terms


def with_steps(model: Talker, n_steps: int, guidance: float | None = None) -> Talker:
    """The same weights with another default DDIM grid in the config (what a student is), and
    another default guidance scale if given."""
    changes: dict[str, Any] = {"sampler": "ddim", "sampler_steps": n_steps}
    if guidance is not None:
        changes["guidance"] = guidance
    out = Talker(model.config.replace(**changes), model.basis, subjects=model.subjects)
    out.load_state_dict(model.state_dict())
    return out


def distill(teacher_ckpt: str | Path, dataset: Any, out_dir: str | Path, steps: int = 8,
            config: DistillConfig | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Halve the teacher's grid from ``config.start_steps`` down to ``steps``; returns the path
    of the final student (guidance 1 whatever the teacher's, see the module docstring). Each
    student's validation LVE is logged next to plain DDIM at its step count with the original
    teacher at the distillation's guidance (distillation must beat it, DESIGN §2)."""
    config = config or DistillConfig()
    if steps >= config.start_steps:
        raise ValueError(f"steps ({steps}) must be below start_steps ({config.start_steps}): "
                         "nothing to distill")
    if steps < 1 or config.start_steps % steps or (config.start_steps // steps) & (
            config.start_steps // steps - 1):
        raise ValueError(f"steps ({steps}) must be start_steps ({config.start_steps}) / 2^k")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng, gen = generators(seed)
    original = Talker.from_checkpoint(teacher_ckpt)
    if original.is_regression:
        raise ModelError(f"{teacher_ckpt} is a regression model: there is no sampler to distill")
    guidance = original.config.guidance if config.guidance is None else float(config.guidance)
    if not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
    config = dataclasses.replace(config, guidance=guidance)  # recorded as used
    if guidance != 1.0 and original.config.loss.audio_dropout == 0:
        log.warning("%s was trained without audio dropout: its null-audio prediction, which "
                    "guidance %g extrapolates from, was never trained", teacher_ckpt, guidance)
    loop, identities = config.loop, original.config.identities
    clips = load_clips(dataset, loop.train_split, identities)
    val = load_clips(dataset, loop.val_split, identities)
    sampler = WindowSampler(clips, loop.window_frames, original.config.features,
                            original.receptive_field, loop.p_window_at_start, loop.augment)
    teacher, n, path = with_steps(original, config.start_steps), config.start_steps, Path()
    teacher_guidance = guidance  # the first round's; later teachers are guided students
    while n > steps:
        n //= 2
        student = with_steps(teacher, n, guidance=1.0)
        _round(student, teacher, lambda: sampler.batch(loop.batch_size, rng), n, config, gen,
               out, progress, teacher_guidance)
        teacher_guidance = 1.0
        record: dict[str, Any] = {"round_steps": n}
        if val:
            record["student"] = evaluate_talker(student, val, n, max_clips=loop.val_utterances)
            record["teacher_ddim"] = evaluate_talker(original, val, n, guidance=guidance,
                                                     max_clips=loop.val_utterances)
        append_log(out, record)
        path = student.save(out / f"student_{n}.safetensors",
                            {"distill_config": asdict(config), "seed": seed,
                             "teacher": str(teacher_ckpt), **record})
        teacher = student
    return path


def _round(student: Talker, teacher: Talker, batches: Callable[[], TrainBatch], n: int,
           config: DistillConfig, gen: torch.Generator, out: Path, progress: bool,
           guidance: float) -> None:
    """One halving round: ``config.iters_per_round`` steps of the student on ``distill_loss``
    with the teacher at ``guidance``."""
    teacher.eval()
    teacher.requires_grad_(False)
    loop = config.loop
    for _ in optimise(student, optimizer(student, loop),
                      lambda batch: distill_loss(student, teacher, batch, n, gen, config.gt_weight,
                                                 guidance),
                      batches, warmup_constant(loop.lr, loop.warmup_steps), loop, out,
                      range(config.iters_per_round), progress, tags={"round_steps": n}):
        pass  # nothing between steps: a round is evaluated once, at its end (distill)
