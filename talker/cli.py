"""``talker``, the one command-line entry point (DESIGN §8; ``python -m talker`` is the same).

It assembles the run-time commands (``realtime.cli``: serve, stream, mic, animate) and the offline
ones (``models.training.cli``: corpus, train, distill, eval), so that ``realtime/`` never imports
corpus or training code. Errors: a :class:`models.errors.UserError` (or a file-system refusal) is
printed as one line and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from models.errors import UserError
from models.training import cli as offline
from realtime import cli as runtime


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talker", description="diffusion-talker: speech in, streaming 3D face motion out"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    runtime.add_commands(sub)
    offline.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (UserError, FileNotFoundError, PermissionError) as exc:
        if args.verbose:
            raise
        print(f"talker: error: {exc}", file=sys.stderr)
        return 2
