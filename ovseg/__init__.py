"""ovseg: open-vocabulary, promptable semantic segmentation with SAM proposals and CLIP scoring.

>>> import ovseg
>>> result = ovseg.segment("street.jpg", classes=["road", "red truck", "sky"])
>>> result.label_map  # int32 (H, W): class index, or ovseg.UNLABELED (-1)
"""

from ovseg.grounding import GroundingResult, ground
from ovseg.image import load_image
from ovseg.pipeline import Segmenter, segment
from ovseg.proposals import Masks
from ovseg.result import UNLABELED, Segment, SegmentationResult

__version__ = "0.1.0"

__all__ = [
    "UNLABELED",
    "GroundingResult",
    "Masks",
    "Segment",
    "SegmentationResult",
    "Segmenter",
    "__version__",
    "ground",
    "load_image",
    "segment",
]
