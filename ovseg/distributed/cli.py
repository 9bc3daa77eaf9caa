"""How ``ovseg segment --ray`` and ``ovseg eval --ray`` run (their options are in
:mod:`ovseg.cli._args`)."""

from __future__ import annotations

import argparse

from ovseg.cli._ray_args import check_worker_device, ray_options

__all__ = ["evaluate_with_ray_options", "run_segment"]


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


def run_segment(args: argparse.Namespace, prepare, error) -> int:
    """``ovseg segment --ray``: the checks of ``prepare`` (``ovseg segment``'s own), then
    :func:`ovseg.distributed.segment.run_ray`; the exit code (1 if an image failed, 130 after
    Ctrl-C)."""
    import sys

    from ovseg.cli._outputs import is_complete
    from ovseg.distributed.inputs import list_inputs
    from ovseg.distributed.plan import prepare_on_driver
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
