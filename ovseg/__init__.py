"""ovseg: open-vocabulary, promptable semantic segmentation with SAM proposals and CLIP scoring.

>>> import ovseg
>>> result = ovseg.segment("street.jpg", classes=["road", "red truck", "sky"])
>>> result.label_map  # int32 (H, W): class index, or ovseg.UNLABELED (-1)

``import ovseg`` is light: torch and the model libraries load when a name that needs them is
first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ovseg.constants import UNLABELED

__version__ = "0.2.0"

_LAZY = {
    "GroundingResult": "ovseg.grounding.result",
    "ground": "ovseg.grounding.core",
    "heatmap": "ovseg.grounding.core",
    "load_image": "ovseg.image",
    "Segmenter": "ovseg.pipeline",
    "segment": "ovseg.api",
    "Masks": "ovseg.structures",
    "Segment": "ovseg.result",
    "SegmentationResult": "ovseg.result",
}

__all__ = [
    "UNLABELED",
    "GroundingResult",
    "Masks",
    "Segment",
    "SegmentationResult",
    "Segmenter",
    "__version__",
    "ground",
    "heatmap",
    "load_image",
    "segment",
]

if TYPE_CHECKING:
    from ovseg.api import segment
    from ovseg.grounding.core import ground, heatmap
    from ovseg.grounding.result import GroundingResult
    from ovseg.image import load_image
    from ovseg.pipeline import Segmenter
    from ovseg.result import Segment, SegmentationResult
    from ovseg.structures import Masks


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ovseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
