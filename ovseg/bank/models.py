"""The models a bank build needs, from their names: the VFM and the mask generator.

VFM specs (:func:`resolve_vfm`): ``tiny-random`` (a tiny random DINOv2, key ``dinov2-tiny``),
``hf:ORG/NAME`` or a local transformers folder (``Dinov2Model``,
``Dinov2WithRegistersModel``, ``DINOv3ViTModel``; key ``dinov2`` / ``dinov3`` as the
reference's, else the name made file-safe), or a built VFM object. The reference's default,
C-RADIOv3-L (``radiov3``), comes with ovseg's RADIO models.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import numpy as np

from ovseg.bank.build import BANK_MASK_SETTINGS
from ovseg.constants import TINY

__all__ = ["DEFAULT_VFM", "resolve_vfm", "sam_mask_fn", "vfm_key"]

DEFAULT_VFM = "radiov3"


def vfm_key(model_id: str) -> str:
    """The bank key of a transformers VFM: ``dinov3`` / ``dinov2`` for those families (the
    reference's keys, ViT-L with registers), else the id made file-safe."""
    low = model_id.lower()
    for fam in ("dinov3", "dinov2"):
        if fam in low:
            return fam
    return re.sub(r"[^A-Za-z0-9.-]+", "-", model_id).strip("-")


def resolve_vfm(spec, device=None, key: str | None = None):
    """A VFM object (see :mod:`ovseg.methods.vfm`) from ``spec``.

    Raises:
        ValueError: an unknown name (the RADIO names until RADIO is part of ovseg).
        FileNotFoundError: a transformers model that is not cached.
    """
    from ovseg.methods.vfm import TransformersVfm, check_vfm, tiny_dinov2_vfm
    from ovseg.models.build import resolve_device

    device = resolve_device(device)
    if not isinstance(spec, str):
        check_vfm(spec)
        return spec
    if spec == TINY:
        vfm = tiny_dinov2_vfm(name=key or "dinov2-tiny")
        return vfm.to(device)
    if spec.startswith("hf:") or "/" in spec:
        from transformers import AutoModel

        from ovseg.models.clip_weights import hf_missing

        model_id = spec.removeprefix("hf:")
        try:
            model = AutoModel.from_pretrained(model_id, local_files_only=True)
        except OSError as e:
            raise FileNotFoundError(hf_missing(model_id, e)) from e
        return TransformersVfm(model.to(device), key or vfm_key(model_id))
    raise ValueError(
        f"unknown VFM {spec!r}: give {TINY!r}, hf:ORG/NAME (a DINOv2 or DINOv3 model, e.g. "
        "hf:facebook/dinov2-with-registers-large) or a local transformers folder"
        + (" (the RADIO models are not part of this ovseg build)" if "radio" in spec else "")
    )


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
