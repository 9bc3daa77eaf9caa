"""Where a region method's class-agnostic regions come from when the caller gives none
(``masks=``): the options ``mask_generator`` and ``eomt_model`` of CorrCLIP and CorrCLIPv2.

Light on purpose (no torch): the configs import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovseg.constants import EOMT

__all__ = ["MASK_GENERATORS", "RegionOptions"]

MASK_GENERATORS = ("sam", "eomt")
"""``"sam"``: the Segmenter's SAM (1 or 2), automatic masks with CorrCLIP's on-the-fly settings;
``"eomt"``: EoMT's panoptic segments (:mod:`ovseg.proposals.eomt`)."""


@dataclass(frozen=True)
class RegionOptions:
    """A mixin of region methods' configs (listed before the config it extends).

    Attributes:
        mask_generator: one of :data:`MASK_GENERATORS` (``"sam"``).
        eomt_model: the EoMT of ``mask_generator="eomt"``: ``"eomt"`` (EoMT-L COCO panoptic
            640, ``tue-mps/coco_panoptic_eomt_large_640``, the reference's), a Hugging Face
            id, a local folder of a transformers EoMT checkpoint, or ``"eomt-tiny-random"``.
    """

    mask_generator: str = "sam"
    eomt_model: str = EOMT

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.mask_generator not in MASK_GENERATORS:
            raise ValueError(
                f"mask_generator must be one of {', '.join(MASK_GENERATORS)}, "
                f"got {self.mask_generator!r}"
            )
        if isinstance(self.eomt_model, Path):
            object.__setattr__(self, "eomt_model", str(self.eomt_model))
        if not isinstance(self.eomt_model, str) or not self.eomt_model.strip():
            raise ValueError(
                f"eomt_model must be 'eomt', 'eomt-tiny-random', a Hugging Face id or a folder, "
                f"got {self.eomt_model!r}"
            )
