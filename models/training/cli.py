"""The offline commands of ``talker`` (DESIGN §8): ``corpus`` (and ``corpus preview``),
``train``, ``distill``, ``eval``. Arguments are parsed here only; each command hands plain values or
config dataclasses to library code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.errors import ConfigError
from talker.args import (
    name_list,
    non_negative_float,
    non_negative_int,
    positive_int,
    probability,
)

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    for add in (_add_corpus, _add_train, _add_distill, _add_eval):
        add(sub)


# ---------------------------------------------------------------------------------------- corpus
def _cmd_corpus(args: argparse.Namespace) -> int:
    from models.corpus.generator import CorpusConfig, generate_corpus

    if not args.out:
        raise ConfigError("talker corpus needs --out DIR (or: talker corpus preview DIR ...)")
    if args.festival_voices and not args.heldout_synth:
        raise ConfigError("--festival-voices needs --heldout-synth N (N > 0)")
    if args.flite_voices and not args.train_flite:
        raise ConfigError("--flite-voices needs --train-flite N (N > 0)")
    config = CorpusConfig(talkers=args.talkers, utterances=args.utterances, seed=args.seed,
                          heldout_synth_utterances=args.heldout_synth,
                          festival_voices=tuple(args.festival_voices), voices=args.voices,
                          train_synth_utterances=args.train_flite,
                          flite_voices=tuple(args.flite_voices))
    generate_corpus(config, Path(args.out), workers=args.workers, progress=not args.quiet)
    print(f"corpus written to {args.out}")
    return 0


def _cmd_corpus_preview(args: argparse.Namespace) -> int:
    from models.corpus.preview import render_preview

    render_preview(Path(args.dir), args.utterance, Path(args.out))
    print(f"preview written to {args.out}")
    return 0


def _add_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="generate the talking-face corpus (espeak-ng speech + rig)")
    p.add_argument("--out", help="output folder (VOCASET layout); required to generate")
    p.add_argument("--talkers", type=positive_int, default=16)
    p.add_argument("--utterances", type=positive_int, default=120, help="per talker")
    p.add_argument("--voices", type=positive_int, metavar="N",
                   help="espeak voices the training talkers share (default: 3/8 of them, "
                        "rounded up); more voices, wider range of voices heard in training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-synth", type=non_negative_int, default=0, metavar="N",
                   help="per training talker, N more utterances spoken by Festival (the "
                        "heldout_synth split: a synthesiser never trained on); needs festival")
    p.add_argument("--festival-voices", type=name_list, default=(), metavar="A,B",
                   help="Festival voices for --heldout-synth (default: all installed English "
                        "ones, e.g. kal_diphone,ked_diphone,cmu_us_slt_arctic_hts)")
    p.add_argument("--train-flite", type=non_negative_int, default=0, metavar="N",
                   help="per training talker, N more training utterances spoken by Flite (a "
                        "second engine heard in training); needs flite")
    p.add_argument("--flite-voices", type=name_list, default=(), metavar="A,B",
                   help="Flite voices for --train-flite (default: awb,rms; kal, kal16 and slt "
                        "are refused: they would leak into heldout_synth)")
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_corpus)
    psub = p.add_subparsers(dest="corpus_command")
    pv = psub.add_parser("preview", help="plot waveform, phonemes and weight curves")
    pv.add_argument("dir", help="corpus folder")
    pv.add_argument("--utterance", required=True, help="utterance id, e.g. T00_U0000")
    pv.add_argument("--out", required=True, help="PNG path")
    pv.set_defaults(func=_cmd_corpus_preview)




# ------------------------------------------------------------------------------------ models
def _load_dataset(path: str):
    from models.data.dataset import TalkingFaceDataset

    if not Path(path).is_dir():
        raise ConfigError(f"no dataset folder {path}; make one with `talker corpus --out {path}`")
    return TalkingFaceDataset.load(Path(path))


def _set_threads(threads: int | None) -> None:
    """Torch threads of a training/eval command; None keeps torch's default (all cores)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.training.train import TrainConfig, train

    _set_threads(args.threads)
    config = replace(TrainConfig.preset(args.preset), objective=args.objective)
    if args.steps:
        config = replace(config, n_steps=args.steps)
    if args.audio_dropout is not None:
        config = replace(config, loss=replace(config.loss, audio_dropout=args.audio_dropout))
    if args.gap_loss is not None:
        config = replace(config, loss=replace(config.loss, gap=args.gap_loss))
    if args.augment_colour is not None:
        if config.loop.augment is None:
            raise ConfigError(f"--augment-colour: the {args.preset} preset trains without "
                              "augmentation")
        augment = replace(config.loop.augment, p_colour=args.augment_colour)
        config = replace(config, loop=replace(config.loop, augment=augment))
    if args.lookahead_frames is not None:
        encoder = replace(config.model.encoder, lookahead_frames=args.lookahead_frames)
        if encoder.lookahead_frames > encoder.context_frames:
            raise ConfigError(f"--lookahead-frames {args.lookahead_frames} exceeds the encoder's "
                              f"reach of {encoder.context_frames} frames")
        config = replace(config, model=replace(config.model, encoder=encoder))
    path = train(_load_dataset(args.data), config, Path(args.out), seed=args.seed,
                 progress=not args.quiet, resume=not args.no_resume)
    print(f"{'regression baseline' if args.objective == 'regression' else 'teacher'} "
          f"checkpoint: {path}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the diffusion teacher on a corpus")
    p.add_argument("--data", required=True, help="corpus folder (ours or VOCASET/BIWI-style)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl)")
    p.add_argument("--preset", choices=("tiny", "default", "full"), default="default")
    p.add_argument("--steps", type=positive_int, help="override the preset's step count")
    p.add_argument("--objective", choices=("diffusion", "regression"), default="diffusion",
                   help="regression: the deterministic baseline (same network, no diffusion)")
    p.add_argument("--audio-dropout", type=probability, metavar="P",
                   help="train with the null audio for this fraction of windows (default 0): "
                        "what classifier-free guidance (distill/eval --guidance) needs")
    p.add_argument("--gap-loss", type=non_negative_float, metavar="W",
                   help="weight of the lip-gap loss (mm^2; frames where the truth's lips touch "
                        "count 5x): against damped openings and missed p/b/m (default 0)")
    p.add_argument("--augment-colour", type=probability, metavar="P",
                   help="colour this fraction of training windows with a random spectral tilt "
                        "and envelope (another voice or microphone; default 0)")
    p.add_argument("--lookahead-frames", type=non_negative_int, metavar="N",
                   help="motion frames of future audio the encoder hears (default 3 = 100 ms): "
                        "the model's look-ahead, part of every stream's latency")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, help="torch threads (default: all cores)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a run")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_distill(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.training.distill import DistillConfig, distill

    _set_threads(args.threads)
    config = DistillConfig.preset(args.preset)
    if args.iters:
        config = replace(config, iters_per_round=args.iters)
    if args.start_steps:
        config = replace(config, start_steps=args.start_steps)
    if args.guidance is not None:
        config = replace(config, guidance=args.guidance)
    if args.gt_weight is not None:
        config = replace(config, gt_weight=args.gt_weight)
    path = distill(Path(args.teacher), _load_dataset(args.data), Path(args.out), steps=args.steps,
                   config=config, seed=args.seed, progress=not args.quiet)
    print(f"student checkpoint: {path}")
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="progressive distillation of a teacher to few steps")
    p.add_argument("--teacher", required=True, help="teacher .safetensors")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=positive_int, default=8)
    p.add_argument("--preset", choices=("tiny", "default", "full"), default="default")
    p.add_argument("--iters", type=positive_int, help="override iterations per halving round")
    p.add_argument("--start-steps", type=positive_int,
                   help="the teacher's grid to halve from (default 64); e.g. 8 with a student_8 "
                        "as --teacher continues to 4 and 2 steps")
    p.add_argument("--guidance", type=non_negative_float, metavar="G",
                   help="the teacher's targets with classifier-free guidance G on the audio "
                        "(default: the teacher's own, 1); the student samples unguided, one "
                        "pass per step (teacher trained with --audio-dropout)")
    p.add_argument("--gt-weight", type=non_negative_float, metavar="W",
                   help="weight of the data anchor next to the teacher's targets (default: the "
                        "preset's, 0.5; 0 = pure progressive distillation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, help="torch threads (default: all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_distill)


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from models.training.evaluate import SPLITS, EvalConfig, evaluate_checkpoint

    if args.guidance and not args.teacher:
        raise ConfigError("--guidance adds teacher rows: give --teacher too")
    config = EvalConfig(max_utterances=args.max_utterances, steps=tuple(args.steps or ()),
                        guidance=tuple(args.guidance or ()), teacher=args.teacher,
                        baseline=args.baseline, seed=args.seed, ddpm=not args.no_ddpm,
                        splits=args.splits or SPLITS)
    results = evaluate_checkpoint(Path(args.checkpoint), _load_dataset(args.data), config)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results.get("summary", results), indent=1))
    print(f"results written to {args.json}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="metrics (LVE, FDD, MVE, identity) of a checkpoint, as JSON")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--json", required=True, help="output JSON path")
    p.add_argument("--teacher", help="teacher checkpoint to compare with (all steps and DDIM)")
    p.add_argument("--baseline", help="regression checkpoint (train --objective regression)")
    p.add_argument("--steps", type=positive_int, action="append",
                   help="DDIM step counts to evaluate the teacher at (repeatable)")
    p.add_argument("--guidance", type=non_negative_float, action="append", metavar="G",
                   help="also evaluate the teacher's DDIM rows with classifier-free guidance G "
                        "(rows teacher_ddim{steps}_g{G}; repeatable)")
    p.add_argument("--max-utterances", type=positive_int, default=40)
    p.add_argument("--no-ddpm", action="store_true",
                   help="skip the teacher's all-steps DDPM row (the slow one)")
    p.add_argument("--splits", type=name_list, metavar="A,B",
                   help="splits to evaluate (default: test, heldout_talker, heldout_voice, "
                        "heldout_synth, those the corpus has; test always)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_eval)
