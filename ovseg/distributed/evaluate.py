"""``ovseg eval --ray`` and :func:`evaluate_dataset`: an evaluation spread over Ray workers.

The driver makes every check of :func:`ovseg.eval.evaluate` (one definition of them:
:func:`~ovseg.eval.runner.plan_evaluation`); the image indices become a Ray dataset, and
each worker (a Ray actor holding one :class:`EvalWorker`, whose model is built on its first
uncached image) predicts or reads the cached prediction of each image and returns one
confusion matrix per batch. The driver sums them and writes the same reports as a local
evaluation; the prediction cache is shared, so an interrupted run resumes locally or on Ray.
The dataset folder and the report folder must be readable and writable by every worker (a
shared file system on a cluster of several machines).
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["EvalWorker", "evaluate_dataset"]


class EvalWorker:
    """The per-worker model of a distributed evaluation, called on batches of ``{"index"}``
    rows; returns one row per batch: the batch's confusion matrix (flattened) and counts."""

    def __init__(self, plan, threads: int = 1, fault_once: str | None = None):
        from ovseg.distributed._ray import set_threads

        set_threads(threads)
        self.plan, self.fault_once, self.predictor = plan, fault_once, None

    def model(self):
        from ovseg.eval.predict import Predictor

        if self.predictor is None:
            plan = self.plan
            self.predictor = Predictor(plan.config, plan.dataset, None, plan.device)
        return self.predictor

    def __call__(self, batch: dict) -> dict:
        from ovseg.distributed.segment import exit_once

        if self.fault_once:
            exit_once(self.fault_once)
        cm, cached = self.plan.matrix(), 0
        for i in batch["index"]:
            pred, label, hit = self.plan.prediction(int(i), self.model)
            cm.update(pred, label)
            cached += hit
        return {
            "matrix": [cm.matrix.ravel()],
            "cached": [cached],
            "computed": [len(batch["index"]) - cached],
        }


def evaluate_dataset(
    data, out, *, address: str | None = None, workers: int | None = None,
    gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, batch_size: int = 1,
    threads_per_worker: int | None = None, progress: bool = False, **options,
) -> dict:  # fmt: skip
    """Evaluate on the dataset at ``data`` with Ray workers and write the reports of
    :func:`ovseg.eval.evaluate` (same ``options``, same report, the confusion matrices of the
    workers summed).

    ``address``, ``workers``, ``gpus_per_worker``, ``cpus_per_worker``, ``batch_size``,
    ``threads_per_worker``: see :class:`~ovseg.distributed._ray.RayOptions`.

    Raises:
        ValueError, TypeError, FileNotFoundError: as :func:`ovseg.eval.evaluate`, before any
            work; ``ValueError`` for ``predictions`` (scoring saved maps needs no cluster).
        RuntimeError: Ray failed (no cluster at ``address``, a worker's error).
    """
    from tqdm import tqdm

    from ovseg.cli._ray_args import check_worker_device
    from ovseg.distributed._ray import RayOptions, connect, require_ray, worker_error
    from ovseg.distributed.segment import FAULT_ENV
    from ovseg.eval.runner import finish_evaluation, plan_evaluation

    ray_options = RayOptions(
        address, workers, cpus_per_worker, gpus_per_worker, batch_size, threads_per_worker
    )
    check_worker_device(options.get("device"), gpus_per_worker)
    if options.get("predictions") is not None:
        raise ValueError("--ray runs a model; scoring saved predictions needs no cluster")
    if "segmenter" in options:
        raise ValueError("a distributed evaluation builds its models in each worker; no segmenter")
    require_ray()
    start = time.perf_counter()
    plan = plan_evaluation(data, out, **options)
    cm = plan.matrix()
    items = [{"index": i} for i in range(plan.count)]
    try:
        with connect(address) as ray, ray_options.worker_pool(ray, len(items)) as pool:
            rows = ray.data.from_items(items, override_num_blocks=-(-len(items) // batch_size))
            rows = rows.map_batches(
                EvalWorker,
                fn_constructor_kwargs={
                    "plan": plan,
                    "threads": ray_options.threads(),
                    "fault_once": os.environ.get(FAULT_ENV),
                },
                **pool,
            )
            bar = tqdm(total=plan.count, desc=f"eval {plan.dataset.kind}", disable=not progress)
            for row in rows.iter_rows():
                cm.matrix += np.asarray(row["matrix"], np.int64).reshape(cm.matrix.shape)
                plan.counts["cached"] += int(row["cached"])
                plan.counts["computed"] += int(row["computed"])
                bar.update(int(row["cached"]) + int(row["computed"]))
            bar.close()
    except Exception as e:
        if type(e).__module__.startswith("ray"):
            raise RuntimeError(f"the Ray run failed: {worker_error(e)}") from e
        raise
    return finish_evaluation(plan, cm, start)
