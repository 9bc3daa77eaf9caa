"""Ray, imported on demand, and the cluster a run uses.

Without an address a run starts a local Ray on this machine and stops it at the end; with
one (``auto``, ``ray://HOST:10001``) it joins that cluster. When the caller has already
called ``ray.init``, that session is used as it is and left running.

A run's workers (Ray Data's actor pool) live in a placement group of the run
(:meth:`RayOptions.worker_pool`), removed when the run ends, failed or not: on a cluster that
outlives the run, every worker is then gone and its CPUs and GPUs free. (After a failed run Ray
Data only drops its handles of the actors, and the failure's traceback keeps them alive until
Python's garbage collector runs, so the CPUs stayed held.)
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RayOptions", "connect", "require_ray", "set_threads", "worker_error"]


def require_ray():
    """The ``ray`` module, with Ray Data loaded.

    Raises:
        ModuleNotFoundError: Ray is not installed, with the command that installs it.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            'distributed runs need Ray Data: pip install "ovseg[ray]" (or pip install "ray[data]")'
        ) from e
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How a run uses Ray.

    ``address``: None starts a local Ray here; ``"auto"`` joins the cluster this machine is
    part of; ``"ray://HOST:10001"`` a remote one through Ray Client. ``workers``: the number
    of model copies (Ray actors), None for as many as the cluster's CPUs (or GPUs, with
    ``gpus_per_worker``) allow. ``cpus_per_worker``, ``gpus_per_worker``: what each worker
    reserves (a fraction of a GPU shares it). ``batch_size``: images per call of a worker.
    ``threads_per_worker``: torch's CPU threads in each worker; None for as many as a local
    run in this process's environment uses (``torch.get_num_threads()`` here), because CPU
    results depend on the number of threads in their last bits, and with it a label here and
    there: the same number keeps the outputs byte-identical to a local run's.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 1
    threads_per_worker: int | None = None

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ValueError(f"address must be 'auto' or ray://HOST:PORT, got {self.address!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus per worker must be > 0, got {self.cpus_per_worker!r}")
        if not self.gpus_per_worker >= 0:
            raise ValueError(f"gpus per worker must be >= 0, got {self.gpus_per_worker!r}")
        threads = self.threads_per_worker
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads per worker must be a positive integer, got {threads!r}")

    def threads(self) -> int:
        """torch's CPU threads for each worker (see the class docstring)."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        import torch

        return torch.get_num_threads()

    def pool_size(self, ray) -> int:
        """The number of workers: as given, or what the cluster's resources allow."""
        if self.workers is not None:
            return self.workers
        resources = ray.cluster_resources()
        if self.gpus_per_worker:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus_per_worker:
                raise ValueError(
                    f"the Ray cluster has {gpus:g} GPU(s); {self.gpus_per_worker:g} per worker "
                    "asked (leave --gpus-per-worker out to run on CPUs)"
                )
            return max(1, int(gpus // self.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))

    def map_batches_args(self, ray, items: int) -> dict:
        """The ``Dataset.map_batches`` arguments of a pool of model workers (Ray actors) for
        ``items`` rows (never more workers than batches)."""
        batches = -(-items // self.batch_size)
        args = {
            "compute": ray.data.ActorPoolStrategy(size=max(1, min(self.pool_size(ray), batches))),
            "batch_size": self.batch_size,
            "num_cpus": self.cpus_per_worker,
        }
        if self.gpus_per_worker:
            args["num_gpus"] = self.gpus_per_worker
        return args

    @contextlib.contextmanager
    def worker_pool(self, ray, items: int) -> Iterator[dict]:
        """:meth:`map_batches_args` whose actors run in a placement group of one bundle per
        worker (its CPUs and GPUs), removed on exit, failed run or not: the workers are killed
        and what they reserved is released at once (see the module docstring)."""
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        args = self.map_batches_args(ray, items)
        bundle = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            bundle["GPU"] = float(self.gpus_per_worker)
        group = placement_group([dict(bundle) for _ in range(args["compute"].min_size)])
        try:
            # passed as a Ray remote argument (which Ray 2.60 marks deprecated for Ray 2.64)
            yield args | {"scheduling_strategy": PlacementGroupSchedulingStrategy(group)}
        finally:
            remove_placement_group(group)


@contextlib.contextmanager
def connect(address: str | None, progress: bool = False) -> Iterator:
    """Yield ``ray`` connected to a cluster (see the module docstring)."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        if address is None:
            ray.init(address="local", logging_level="warning", include_dashboard=False)
        else:
            ray.init(address=address, logging_level="warning")
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = progress
    logger = logging.getLogger("ray.data")
    level = logger.level
    if not progress:
        logger.setLevel(logging.WARNING)  # no per-run INFO lines of Ray Data
    try:
        yield ray
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)
        if started:
            ray.shutdown()


def set_threads(threads: int) -> None:
    """Set torch's CPU threads in a worker (Ray starts workers with ``OMP_NUM_THREADS`` set
    to their CPUs, 1 by default)."""
    import torch

    torch.set_num_threads(threads)


_RAISED = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception|Exit|Interrupt)(?:: .*)?$")


def worker_error(error: BaseException) -> str:
    """The worker's own exception in a Ray error's text, e.g. ``ValueError: ...`` (its last
    line naming an exception outside Ray, which Ray Data follows with its own advice), else
    the text's last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line) and not line.startswith("ray.")]
    return raised[-1] if raised else lines[-1] if lines else type(error).__name__
