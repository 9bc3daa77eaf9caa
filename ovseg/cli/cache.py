"""``ovseg cache info | clear``: the disk cache of text embeddings.

Text embeddings are kept in ``$OVSEG_CACHE_DIR/text`` (default ``~/.cache/ovseg/text``), one
small file per (CLIP text tower, template set, class name); ``OVSEG_TEXT_CACHE=0`` turns the
cache off. Handlers return an exit code (0 ok, 1 failure).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cache`` command and its ``info``/``clear`` subcommands."""
    parser = subparsers.add_parser(
        "cache",
        help="show or clear the disk cache of text embeddings",
        description="Text embeddings are cached in $OVSEG_CACHE_DIR/text (default "
        "~/.cache/ovseg/text); OVSEG_TEXT_CACHE=0 turns the cache off.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="cache_command", metavar="COMMAND")
    sub.add_parser("info", help="the folder, its entries and their size").set_defaults(func=_info)
    sub.add_parser("clear", help="delete every cached text embedding").set_defaults(func=_clear)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _info(args: argparse.Namespace) -> int:
    from ovseg.scoring import text_cache

    folder = text_cache.text_cache_dir()
    files = sorted(folder.glob("*.bin")) if folder.is_dir() else []
    size = sum(f.stat().st_size for f in files)
    state = "on" if text_cache.enabled() else f"off ({text_cache.SWITCH_ENV}=0)"
    print(f"text embeddings: {folder}\nentries: {len(files)} ({size / 1024:.1f} KiB)\n"
          f"cache: {state}")  # fmt: skip
    return 0


def _clear(args: argparse.Namespace) -> int:
    from ovseg.scoring import text_cache

    try:
        removed = text_cache.clear()
    except OSError as e:
        print(f"ovseg cache: error: {e}", file=sys.stderr)
        return 1
    print(f"removed {removed} text embedding file(s) from {text_cache.text_cache_dir()}")
    return 0
