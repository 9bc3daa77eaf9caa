"""Thin wrapper: ``python benchmarks/run.py [options]`` is ``ovseg bench [options]``."""

import sys

from ovseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
