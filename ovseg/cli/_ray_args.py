"""The ``--ray`` options of ``ovseg segment`` and ``ovseg eval`` and their checks (which the
Ray runs in :mod:`ovseg.distributed` use)."""

from __future__ import annotations

import argparse
import math

__all__ = ["add_ray_arguments", "check_worker_device", "ray_options"]


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
