"""Models: specs, the registry of official checkpoints (verified downloads) and the builders of
SAM, CLIP and the vision foundation models (RADIO, DINOv2/v3: ``build_vfm``) from names, paths
or built models; the tiny random test models are ordinary entries (``"tiny-random"``).

The builders load torch when first used, so ``ovseg.models.weights`` stays light.
"""

from __future__ import annotations

import importlib

__all__ = ["build_clip", "build_sam", "build_vfm", "resolve_device", "sam_names"]


def __getattr__(name: str):
    if name == "build_vfm":
        return importlib.import_module("ovseg.models.vfm").build_vfm
    if name in __all__:
        return getattr(importlib.import_module("ovseg.models.build"), name)
    raise AttributeError(f"module 'ovseg.models' has no attribute {name!r}")
