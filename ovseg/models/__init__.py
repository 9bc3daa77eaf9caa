"""Models: specs, the registry of official checkpoints (verified downloads) and the builders of
SAM and CLIP from names, paths or built models; the tiny random test models are ordinary
entries (``"tiny-random"``).

The builders load torch when first used, so ``ovseg.models.weights`` stays light.
"""

from __future__ import annotations

import importlib

__all__ = ["build_clip", "build_sam", "resolve_device", "sam_names"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("ovseg.models.build"), name)
    raise AttributeError(f"module 'ovseg.models' has no attribute {name!r}")
