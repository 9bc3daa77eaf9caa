"""ovseg: open-vocabulary, promptable semantic segmentation with SAM proposals and CLIP scoring.

>>> import ovseg
>>> result = ovseg.segment("street.jpg", classes=["road", "red truck", "sky"])
>>> result.label_map  # int32 (H, W): class index, or ovseg.UNLABELED (-1)
"""

from ovseg.image import load_image
from ovseg.pipeline import Segmenter, segment
from ovseg.proposals import Masks
from ovseg.result import UNLABELED, Segment, SegmentationResult

__version__ = "0.1.0"

__all__ = [
    "UNLABELED",
    "Masks",
    "Segment",
    "SegmentationResult",
    "Segmenter",
    "__version__",
    "load_image",
    "segment",
]
