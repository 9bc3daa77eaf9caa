"""The ``--ray`` options of ``ovseg segment`` and ``ovseg eval``, and their handling."""

from __future__ import annotations

import argparse
import math

__all__ = [
    "add_ray_arguments",
    "check_worker_device",
    "evaluate_with_ray_options",
    "namespace",
    "ray_options",
    "run_segment",
]


def add_ray_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """Add ``--ray [--address A] [--workers N] [--gpus-per-worker G] [--batch-size B]``."""
    group = p.add_argument_group(
        "Ray (a local Ray here, or a cluster; needs pip install 'ovseg[ray]')"
    )
    group.add_argument(
        "--ray",
        action="store_true",
        help=f"process the {what} with Ray Data: a pool of workers, each holding the models",
    )
    group.add_argument(
        "--address",
        default=None,
        metavar="A",
        help="the Ray cluster: auto (this machine's cluster) or ray://HOST:10001 "
        "(default: start a local Ray here)",
    )
    group.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="model copies (default: as many as the cluster's CPUs, or GPUs, allow)",
    )  # fmt: skip
    group.add_argument(
        "--gpus-per-worker", type=float, default=0.0, metavar="G",
        help="GPUs each worker reserves (e.g. 1, or 0.5 to share one; default 0: CPU)",
    )  # fmt: skip
    group.add_argument(
        "--cpus-per-worker", type=float, default=1.0, metavar="C",
        help="CPUs each worker reserves (default 1)",
    )  # fmt: skip
    group.add_argument(
        "--batch-size", type=int, default=1, metavar="B", help="images per worker call (default 1)"
    )
    group.add_argument(
        "--threads-per-worker", type=int, default=None, metavar="T",
        help="torch CPU threads per worker (default: as many as a local run here uses, which "
        "keeps CPU outputs byte-identical to a local run's)",
    )  # fmt: skip


def ray_options(args: argparse.Namespace):
    """The :class:`~ovseg.distributed._ray.RayOptions` of the command line.

    Raises:
        ValueError: a Ray option without ``--ray``, or a bad value.
    """
    from ovseg.distributed._ray import RayOptions

    given = {
        "--address": args.address is not None,
        "--workers": args.workers is not None,
        "--gpus-per-worker": args.gpus_per_worker != 0.0,
        "--cpus-per-worker": args.cpus_per_worker != 1.0,
        "--batch-size": args.batch_size != 1,
        "--threads-per-worker": args.threads_per_worker is not None,
    }
    if not args.ray and any(given.values()):
        flags = ", ".join(k for k, v in given.items() if v)
        raise ValueError(f"{flags} need --ray")
    try:
        return RayOptions(
            args.address, args.workers, args.cpus_per_worker, args.gpus_per_worker,
            args.batch_size, args.threads_per_worker,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(f"--ray: {e}") from e


def evaluate_with_ray_options(args: argparse.Namespace, evaluate):
    """``evaluate`` (the local :func:`ovseg.eval.evaluate`) without ``--ray``; with it,
    :func:`~ovseg.distributed.evaluate.evaluate_dataset` with the Ray options bound.

    Raises:
        ValueError: Ray options without ``--ray``, or bad values.
    """
    import functools

    options = ray_options(args)
    if not args.ray:
        return evaluate
    from ovseg.distributed.evaluate import evaluate_dataset

    return functools.partial(
        evaluate_dataset, address=options.address, workers=options.workers,
        gpus_per_worker=options.gpus_per_worker, cpus_per_worker=options.cpus_per_worker,
        batch_size=options.batch_size, threads_per_worker=options.threads_per_worker,
    )  # fmt: skip


def check_worker_device(device: str | None, gpus_per_worker: float) -> None:
    """Check ``--device`` for the workers, not for this machine (a cluster's driver often has
    no GPU): a valid name, and CUDA only with ``--gpus-per-worker`` (the GPUs Ray gives each
    worker, which it sees as ``cuda:0``...).

    Raises:
        ValueError: what is wrong, in words.
    """
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device must be like cpu, cuda or cuda:0, got {device!r}") from e
    if dev.type == "cuda" and not gpus_per_worker:
        raise ValueError(
            f"--device {device} with --ray needs --gpus-per-worker (e.g. 1, or 0.25 to put 4 "
            "workers on a GPU): Ray gives a worker only the GPUs it reserves"
        )
    if dev.type == "cuda" and (dev.index or 0) >= max(1, math.ceil(gpus_per_worker)):
        raise ValueError(
            f"--device {device}: each worker sees only its own GPU(s) as cuda:0...; use --device "
            "cuda"
        )


def prepare_on_driver(args: argparse.Namespace, prepare, collect):
    """``prepare(args, collect)`` with the device check left to :func:`check_worker_device`."""
    device, args.device = args.device, None
    try:
        return prepare(args, collect)
    finally:
        args.device = device


def run_segment(args: argparse.Namespace, prepare, error) -> int:
    """``ovseg segment --ray``: the checks of ``prepare`` (``ovseg segment``'s own), then
    :func:`ovseg.distributed.segment.run_ray`; the exit code (1 if an image failed, 130 after
    Ctrl-C)."""
    import sys

    from ovseg.cli._outputs import is_complete
    from ovseg.distributed.inputs import list_inputs
    from ovseg.distributed.segment import print_summary, run_ray

    try:
        options = ray_options(args)
        from ovseg.distributed._ray import require_ray

        require_ray()
        check_worker_device(args.device, options.gpus_per_worker)
        out, formats, settings, images, known = prepare_on_driver(args, prepare, list_inputs)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as e:
        return error(e)
    done = sum(i.refused is None and is_complete(out, i.name) for i in images)
    if done:
        print(
            f"ovseg segment: resuming: {done} of {len(images)} image(s) already "
            f"have their outputs in {out}; skipped",
            file=sys.stderr,
        )
    try:
        summary = run_ray(
            out, formats, settings, images, known, options, device=args.device,
            progress=not args.no_progress,
        )  # fmt: skip
    except (RuntimeError, ValueError, OSError) as e:
        return error(e, 1)
    print_summary(summary, out)
    if summary.get("interrupted"):
        print("ovseg segment: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if summary["failed"] else 0


def namespace(inputs, classes, out, formats, options: dict) -> argparse.Namespace:
    """The ``ovseg segment`` command line that :func:`~ovseg.distributed.segment_dataset`'s
    arguments stand for, so that both go through the same checks.

    Raises:
        ValueError: an unknown option name (the known ones listed).
    """
    import json

    from ovseg.cli import segment

    parser = argparse.ArgumentParser(prog="ovseg")
    segment.register(parser.add_subparsers())
    args = parser.parse_args(["segment", "--classes", "_", "-o", str(out)])
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
