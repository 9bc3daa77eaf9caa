"""Launch the ovseg web app.

    python demos/app.py               # SAM ViT-B + CLIP ViT-B/16 (weights must be cached)
    python demos/app.py --tiny        # tiny random models: runs anywhere, labels meaningless
    python demos/app.py --host 0.0.0.0 --port 7860

The same as ``ovseg app`` (see ``ovseg app --help`` for every option).
"""

from __future__ import annotations

import argparse
import sys

from ovseg.cli import main


def demo(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny random test models (a smoke run: the labels mean nothing)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.tiny:
        rest = [
            "--sam",
            "tiny-random",
            "--clip",
            "tiny-random",
            "--no-quality-filters",
            "--points-per-side",
            "16",
            *rest,
        ]
    return main(["app", *rest])


if __name__ == "__main__":
    sys.exit(demo())
