"""Where models run, and the warning of random weights: shared by the model builders."""

from __future__ import annotations

import torch

__all__ = ["RANDOM_WARNING", "resolve_device"]

RANDOM_WARNING = (
    "ovseg: building {what} with RANDOM weights (random_weights=True). Its masks and labels are "
    "meaningless; use this only to measure speed."
)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU; other values go to ``torch.device``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:0', got {device!r}") from e
