"""The ``ovseg`` command line: ``ovseg segment | eval | weights | app | bench | video | bank |
cache``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the options shared
by several subcommands and their checks are in :mod:`ovseg.cli._args`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = ("segment", "eval", "weights", "app", "bench", "video", "bank", "cache")


def build_parser() -> argparse.ArgumentParser:
    from ovseg import __version__

    parser = argparse.ArgumentParser(
        prog="ovseg", description="Open-vocabulary segmentation: SAM proposals scored by CLIP."
    )
    parser.add_argument("--version", action="version", version=f"ovseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"ovseg.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"ovseg.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # A subcommand with ``intermixed`` set takes positionals placed after its options too
        # (``ovseg segment a.jpg --classes road -o out b.jpg``); anything else is an error.
        target = getattr(args, "intermixed", None)
        if target is None or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, target, [*getattr(args, target), *extra])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # subcommands with something to say about it catch it first
        print(f"ovseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`ovseg weights list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
