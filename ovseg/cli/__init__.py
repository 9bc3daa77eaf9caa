"""The ``ovseg`` command line: ``ovseg segment | eval | weights | app | bench``.

Each subcommand lives in its own module exposing ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("segment", "eval", "weights", "app", "bench")


def build_parser() -> argparse.ArgumentParser:
    from ovseg import __version__

    parser = argparse.ArgumentParser(
        prog="ovseg", description="Open-vocabulary segmentation: SAM proposals scored by CLIP.")
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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
