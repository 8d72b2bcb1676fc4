"""The one command-line entry point, ``talker`` (DESIGN §8). Arguments are parsed here only;
each subcommand hands plain values or config dataclasses to library code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("talker")


class CliError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# ---------------------------------------------------------------------------------------- corpus
def _cmd_corpus(args: argparse.Namespace) -> int:
    from models.corpus import CorpusConfig, generate_corpus

    config = CorpusConfig(talkers=args.talkers, utterances=args.utterances, seed=args.seed)
    generate_corpus(config, Path(args.out), workers=args.workers, progress=not args.quiet)
    print(f"corpus written to {args.out}")
    return 0


def _cmd_corpus_preview(args: argparse.Namespace) -> int:
    from models.preview import render_preview

    render_preview(Path(args.dir), args.utterance, Path(args.out))
    print(f"preview written to {args.out}")
    return 0


def _add_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="generate the talking-face corpus (espeak-ng speech + rig)")
    p.add_argument("--out", required=True, help="output folder (VOCASET layout)")
    p.add_argument("--talkers", type=_positive_int, default=16)
    p.add_argument("--utterances", type=_positive_int, default=120, help="per talker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive_int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_corpus)
    psub = p.add_subparsers(dest="corpus_command")
    pv = psub.add_parser("preview", help="plot waveform, phonemes and weight curves of one utterance")
    pv.add_argument("dir", help="corpus folder")
    pv.add_argument("--utterance", required=True, help="utterance id, e.g. T00_U0000")
    pv.add_argument("--out", required=True, help="PNG path")
    pv.set_defaults(func=_cmd_corpus_preview)


# --------------------------------------------------------------------------------------- default
def _cmd_run_default(args: argparse.Namespace) -> int:
    """What ``make run`` starts."""
    from models.corpus import CorpusConfig, generate_corpus
    from models.preview import render_preview

    out = Path("out/demo_corpus")
    print("diffusion-talker: the server is not built yet; generating a small demo corpus instead.")
    generate_corpus(CorpusConfig(talkers=4, utterances=3, seed=1), out, workers=2, progress=True)
    png = Path("out/demo_preview.png")
    first = sorted((out / "wav").glob("*.wav"))[0].stem
    render_preview(out, first, png)
    print(f"corpus: {out}  preview: {png}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talker", description="diffusion-talker: speech in, streaming 3D face motion out"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    adders: list[Callable[[argparse._SubParsersAction], None]] = [_add_corpus]
    for add in adders:
        add(sub)
    p = sub.add_parser("run-default", help="what `make run` starts")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=_cmd_run_default)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"talker: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - library errors become one clear line
        if type(exc).__name__.endswith("Error") and not args.verbose:
            print(f"talker: error: {exc}", file=sys.stderr)
            return 2
        raise
