"""Whole datasets on a Ray cluster: ``ovseg segment --ray``, ``ovseg eval --ray``.

Ray Data reads the list of images as a dataset and streams it through ``map_batches`` to a
pool of workers (Ray actors), each holding its own copy of the models, built once. Ray is an
optional extra (``pip install "ovseg[ray]"``); it is imported only when a run starts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_dataset", "segment_dataset"]


def segment_dataset(inputs, classes, out, **options: Any) -> dict:
    """See :func:`ovseg.distributed.segment.segment_dataset`."""
    from ovseg.distributed.segment import segment_dataset as run

    return run(inputs, classes, out, **options)


def evaluate_dataset(data, out, **options: Any) -> dict:
    """See :func:`ovseg.distributed.evaluate.evaluate_dataset`."""
    from ovseg.distributed.evaluate import evaluate_dataset as run

    return run(data, out, **options)
