"""Timing helpers of ``ovseg bench``: wall time with CUDA synchronised, peak memory, and call
counts of a bound method."""

from __future__ import annotations

import threading
import time

import torch

__all__ = ["Counter", "Peak", "timed"]


class Peak:
    """Peak memory above the level at entry: CUDA allocator peak on GPU, else the process RSS
    sampled every 5 ms (psutil), falling back to ``ru_maxrss`` growth."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb, self.method = device, 0.0, ""

    def __enter__(self):
        self._stop = threading.Event()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:
            import psutil
        except ImportError:
            import resource

            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.method = "ru_maxrss growth (lower bound)"
            return self
        proc = psutil.Process()
        self._base = self._max = proc.memory_info().rss / 2**20
        self.method = "RSS sampled every 5 ms (psutil)"

        def sample():
            while not self._stop.wait(0.005):
                self._max = max(self._max, proc.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = self._max - self._base
        else:
            import resource

            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - self._base
        return False


class Counter:
    """Counts calls of one bound method (CLIP image passes), by wrapping it on the instance."""

    def __init__(self, obj, name: str):
        self.obj, self.name, self.calls = obj, name, 0
        original = getattr(obj, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        setattr(obj, name, counted)

    def close(self) -> None:
        self.obj.__dict__.pop(self.name, None)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0
