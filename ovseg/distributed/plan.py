"""The checks of a Ray segmentation run on the driver: ``ovseg segment``'s own
(:func:`ovseg.cli._plan.prepare`), with the device left to the workers, and the command line
that :func:`~ovseg.distributed.segment_dataset`'s arguments stand for."""

from __future__ import annotations

import argparse

__all__ = ["namespace", "prepare_on_driver"]


def prepare_on_driver(args: argparse.Namespace, prepare, collect):
    """``prepare(args, collect)`` with the device check left to :func:`check_worker_device`."""
    device, args.device = args.device, None
    try:
        return prepare(args, collect)
    finally:
        args.device = device


def namespace(inputs, classes, out, formats, options: dict) -> argparse.Namespace:
    """The ``ovseg segment`` command line that :func:`~ovseg.distributed.segment_dataset`'s
    arguments stand for, so that both go through the same checks.

    Raises:
        ValueError: an unknown option name (the known ones listed).
    """
    import json

    from ovseg.cli import _plan

    parser = argparse.ArgumentParser(prog="ovseg segment")
    _plan.add_arguments(parser)
    args = parser.parse_args(["--classes", "_", "-o", str(out)])
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise TypeError("classes must be a list of strings")
    args.classes, args.inputs = list(classes), [str(i) for i in inputs]
    fixed = {"func", "intermixed", "inputs", "classes", "out", "formats", "no_progress"}
    fixed |= {"ray", "address", "workers", "gpus_per_worker", "cpus_per_worker", "batch_size"}
    fixed.add("threads_per_worker")
    known = sorted(set(vars(args)) - fixed)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for key, value in options.items():
        if key in ("points", "point_labels", "boxes") and value is not None:
            value = json.dumps(value if not hasattr(value, "tolist") else value.tolist())
        if key == "background":
            value = [value] if isinstance(value, str) else list(value)
        setattr(args, key, value)
    from ovseg.cli._outputs import FORMATS

    formats = [formats] if isinstance(formats, str) else list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
    args.formats = [[f] for f in formats]
    args.ray, args.no_progress = True, True
    return args
