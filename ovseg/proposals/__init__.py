"""Proposals: class-agnostic masks from SAM prompts (points, boxes, rough masks, scribbles) and
the automatic grid. SAM 2's masks through video frames: ``ovseg.proposals.propagate.propagate``
and ``ovseg.proposals.tracker.VideoTracker``. SAM 3 (``transformers``): text prompts
(:mod:`ovseg.proposals.sam3_detector`), points, boxes and masks
(:mod:`ovseg.proposals.sam3_tracker`), video (:mod:`ovseg.proposals.sam3_video`)."""

from ovseg.proposals.grid import GridOptions, automatic_masks
from ovseg.proposals.prompts import Prompt, make_prompt
from ovseg.proposals.sam import Proposer
from ovseg.structures import Masks, masks_to_boxes

__all__ = [
    "GridOptions",
    "Masks",
    "Prompt",
    "Proposer",
    "automatic_masks",
    "make_prompt",
    "masks_to_boxes",
]
