"""Region features of one bank image, as the reference's builder computes them
(``generate_clip_embeddings.FeatureExtractor.extract_from_paths``,
``generate_vfm_embeddings.RegionFeatureExtractor.extract_from_paths``).

CLIP stores (:func:`clip_region_features`), per CLIP (main and auxiliary alike): the image
resized by mmcv ``imrescale(img, (2048, 448))``, CLIP-normalised; regions resized to it by
nearest; mmseg windows 336 / 112 padded (centred) to a multiple of 56 (ids with 10000);
per window CorrCLIP's last block with **DINO ViT-B/8** ``q + k`` correlations (not the VFM)
and no region merging; the projected features (not normalised) resized bilinearly to the
window, averaged over windows, resized bilinearly to the original image; per region (the
nonzero ids ascending) the mean of its pixels' features, L2-normalised, stored float16.

VFM keys (:func:`vfm_region_features`): the VFM's dense features of the original image resized
bilinearly to it, L2-normalised per pixel; per region the mean (not normalised), float16.

Regions come as an int id map (0 = unsegmented, one region per other id) or a bool
``(N, H, W)`` stack (then region ``i`` is mask ``i`` and, for the CLIP windows, masks are
painted in order with ids ``1..N``, later ones on top).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.corrclip import PAD_ID, corrclip_window_features
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.slide import slide_logits
from ovseg.methods.vfm import vfm_dense

__all__ = [
    "BANK_CLIP_SETTINGS",
    "clip_region_features",
    "read_bank_image",
    "region_masks",
    "vfm_region_features",
]

BANK_CLIP_SETTINGS = {"short_side": 448, "slide_crop": 336, "slide_stride": 112, "pad": 56}
"""The builder's window settings (``--slide_short 448 --slide_crop 336``, stride 112)."""

_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def read_bank_image(path) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` with the EXIF orientation applied (as the builder reads)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        try:
            orientation = im.getexif().get(274)
        except Exception:  # unreadable EXIF: as the reference, keep the image
            orientation = None
        if orientation in _EXIF_TRANSPOSE:
            im = im.transpose(_EXIF_TRANSPOSE[orientation])
        return np.array(im)


def region_masks(mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(id map for the windows, [bool mask of each region in manifest order])``."""
    if mask.ndim == 2:
        ids = mask.astype(np.int64)
        values = np.unique(ids)
        return ids, [ids == v for v in values[values != 0]]
    if mask.ndim == 3:
        masks = mask.astype(bool)
        ids = np.zeros(masks.shape[1:], np.int64)
        for i, m in enumerate(masks, start=1):
            ids[m] = i
        return ids, list(masks)
    raise ValueError(f"a mask must be (H, W) ids or (N, H, W) bool, got shape {mask.shape}")


def _region_means(feats_hwc: Tensor, masks: list[np.ndarray], normalize: bool) -> Tensor:
    out = []
    for m in masks:
        v = feats_hwc[torch.from_numpy(m)].mean(0)
        out.append(F.normalize(v, dim=-1) if normalize else v)
    if not out:
        return feats_hwc.new_zeros((0, feats_hwc.shape[-1]))
    return torch.stack(out)


def clip_region_features(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    short_side: int = 448,
    slide_crop: int = 336,
    slide_stride: int = 112,
    pad: int = 56,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """``(N, D)`` float32 unit-norm CLIP features of the regions of ``mask`` (see the module
    docstring); ``mean``/``std``: CLIP normalisation (fractions of 255), None: OpenAI's."""
    ids, masks = region_masks(mask)
    if ids.shape != image.shape[:2]:
        raise ValueError(f"mask {ids.shape} and image {image.shape[:2]} differ in size")
    h0, w0 = image.shape[:2]
    size = imrescale_size(h0, w0, short_side)
    device = clip_visual.conv1.weight.device
    x = normalize_image(resize_image(image, size), mean, std).to(device)
    ids_t = torch.from_numpy(ids).to(device)
    ids_in = F.interpolate(ids_t[None, None].float(), size=size, mode="nearest")
    window = lambda crops, crop_ids: corrclip_window_features(  # noqa: E731
        clip_visual,
        dino,
        crops,
        crop_ids,
        clip_mean=OPENAI_MEAN if mean is None else tuple(mean),
        clip_std=OPENAI_STD if std is None else tuple(std),
        eps=None,
    )
    feats = slide_logits(
        x,
        window,
        None,
        crop=slide_crop,
        stride=slide_stride,
        pad_multiple=pad,
        aux=ids_in,
        aux_pad=float(max(PAD_ID, int(ids.max()) + 1)),
    )
    with torch.inference_mode():
        feats = F.interpolate(feats.contiguous(), size=(h0, w0), mode="bilinear")
        return _region_means(feats.permute(0, 2, 3, 1)[0].cpu(), masks, normalize=True)


def vfm_region_features(vfm, image: np.ndarray, mask: np.ndarray) -> Tensor:
    """``(N, D)`` float32 VFM keys of the regions of ``mask`` (see the module docstring)."""
    _, masks = region_masks(mask)
    h0, w0 = image.shape[:2]
    with torch.inference_mode():
        feats = F.interpolate(vfm_dense(vfm, image), size=(h0, w0), mode="bilinear")
        feats = F.normalize(feats, dim=1).permute(0, 2, 3, 1)[0].cpu()
        return _region_means(feats, masks, normalize=False)
