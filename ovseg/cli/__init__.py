"""The ``ovseg`` command line: ``ovseg segment | eval | weights | app | bench``.

Each subcommand lives in its own module exposing ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ovseg.constants import DEFAULT_CLIP, DEFAULT_SAM

SUBCOMMANDS = ("segment", "eval", "weights", "app", "bench")


def add_model_arguments(
    p: argparse.ArgumentParser, scorers: tuple[str, ...] = ("dense", "crop", "both")
) -> None:
    """The model options shared by the subcommands that build a Segmenter."""
    p.add_argument("--sam", default=DEFAULT_SAM, help="SAM: vit_b|vit_l|vit_h|PATH|tiny-random")
    p.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help="CLIP: ARCH/TAG (open_clip), ARCH:PATH, hf:ORG/NAME, or tiny-random",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: auto)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights for registered architectures (timing only; meaningless labels)",
    )
    p.add_argument(
        "--scorer",
        default="dense",
        choices=scorers,
        help="region scorer (default dense: one CLIP pass per image)"
        + (
            "; oracle: each proposal gets its majority ground-truth class"
            if "oracle" in scorers
            else ""
        ),
    )
    p.add_argument(
        "--templates",
        default="imagenet",
        help="prompt templates: imagenet (80, default), simple, photo, none",
    )


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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
