"""The models a bank build needs, from their names: the VFM and the mask generator.

VFM specs (:func:`resolve_vfm`): those of :func:`ovseg.models.vfm.build_vfm` (``radiov3``,
the reference's default, ``radiov2.5``, ``dinov2``, ``dinov3``, ``hf:ORG/NAME``, a RADIO file,
``tiny-random``...), or a built VFM object.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ovseg.bank.build import BANK_MASK_SETTINGS
from ovseg.constants import TINY

__all__ = ["DEFAULT_VFM", "resolve_vfm", "sam_mask_fn"]

DEFAULT_VFM = "radiov3"


def resolve_vfm(spec, device=None, key: str | None = None):
    """A VFM object (see :mod:`ovseg.methods.vfm`) from ``spec`` (any spec of
    :func:`ovseg.models.vfm.build_vfm`), its bank key ``key`` when given.

    Raises:
        ValueError: an unknown name. FileNotFoundError: weights that are not on disk.
    """
    from ovseg.models.vfm import build_vfm

    vfm = build_vfm(spec, device)
    if key is not None:
        vfm.name = key
    return vfm


def sam_mask_fn(spec, device=None, random_weights: bool = False) -> Callable:
    """image -> int region id map from SAM / SAM 2 automatic masks with the reference's
    build settings (:data:`~ovseg.bank.build.BANK_MASK_SETTINGS`, 32 x 32 points, SAM 2 three
    masks per point), painted by area ascending (0 = unsegmented). The tiny random SAM gets
    the quality filters off (its scores are meaningless)."""
    from ovseg.methods.regions import region_id_map
    from ovseg.models.build import build_sam, resolve_device
    from ovseg.proposals.grid import GridOptions, automatic_masks
    from ovseg.proposals.sam import Proposer
    from ovseg.proposals.sam2 import Sam2Proposer, is_sam2_model
    from ovseg.proposals.sam2_grid import Sam2GridOptions

    model = build_sam(spec, resolve_device(device), random_weights=random_weights)
    settings = dict(BANK_MASK_SETTINGS)
    if spec == TINY:
        warnings.warn(
            "ovseg bank: the tiny random SAM comes with the quality filters off",
            UserWarning,
            stacklevel=2,
        )
        settings = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    if is_sam2_model(model):
        proposer, options = Sam2Proposer(model), Sam2GridOptions(**settings)
    else:
        proposer, options = Proposer(model), GridOptions(**settings)

    def masks(image: np.ndarray) -> np.ndarray:
        proposer.set_image(image)
        return region_id_map(automatic_masks(proposer, options).masks, image.shape[:2])

    return masks
