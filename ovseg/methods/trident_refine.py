"""Trident's SAM refinement of its coarse map (``seg_utils/utils.py``: ``sam_refinement``).

:func:`trident_refine` takes the coarse class probabilities ``(K, H, W)`` and labels, and a
``segment_anything`` ``SamPredictor`` holding the embedding of the image Trident's SAM side saw
(the original stretched to multiples of 16), and returns the final labels and the SAM masks it
kept. In the reference's order:

1. Half resolution: ``(H // 2, W // 2)``; labels by nearest, probabilities bilinearly.
2. With ``coarse_thresh > 0`` pixels whose top probability is below it get no class (and
   classes whose top probability is below it are skipped); with ``coarse_thresh == 0`` every
   class's pixels are used.
3. Per class, 8-connected components of at least ``minimal_area`` half-resolution pixels. Each
   gives one SAM prompt: its box (inclusive pixel bounds), a positive point at its highest
   probability pixel (first in row-major order), and the class's probability map as a dense
   mask prompt (resized to the longest side of SAM's mask input, padded, values above
   ``coarse_thresh`` scaled by ``sam_mask_coeff``, others 0, shared by the class's prompts
   and passed un-batched as the reference does). Boxes and points are scaled to SAM's input
   from the half-resolution frame; one mask per prompt.
4. Masks with predicted IoU above ``sam_iou_thresh`` are kept; their logits go back to SAM's
   input image size and then bilinearly to ``(H, W)``; a mask is its logits above 0.
5. Per class: score = max over its masks of ``sigmoid(logit) * probability``, zero outside the
   union of its masks; labels = argmax of the scores; pixels with no score keep the coarse
   label. (The reference's fallback for prompts SAM rejected raises the returned scores to the
   coarse probabilities inside those regions and never changes a label.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MethodRefinement", "trident_refine"]


@dataclass
class MethodRefinement:
    """Trident's refinement of its map.

    Attributes:
        labels: int64 ``(H, W)``, class indices of the final map (same classes as the
            probabilities it refines).
        scores: float32 ``(K, H, W)``, the refined class scores (0 where nothing refined).
        masks: bool ``(N, H, W)``, the SAM masks the refinement kept.
        mask_classes: int64 ``(N,)``, the class of each mask.
        mask_scores: float32 ``(N,)``, SAM's own quality score of each mask.
    """

    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    mask_classes: np.ndarray
    mask_scores: np.ndarray


def _components(mask: np.ndarray, minimal_area: int) -> list[np.ndarray]:
    """8-connected components (raster order of their first pixel) with at least
    ``minimal_area`` pixels."""
    from scipy import ndimage

    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    areas = np.bincount(labelled.ravel(), minlength=count + 1)
    return [labelled == i for i in range(1, count + 1) if areas[i] >= minimal_area]


def _prompts(region: np.ndarray, logit: Tensor) -> tuple[list[float], list[float]]:
    ys, xs = np.nonzero(region)
    box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    pos = int(torch.argmax(logit * torch.from_numpy(region).to(logit)))
    w = logit.shape[1]
    return box, [float(pos % w), float(pos // w)]


def trident_refine(
    probs: Tensor,
    labels: Tensor,
    predictor,
    *,
    coarse_thresh: float = 0.2,
    minimal_area: int = 225,
    sam_mask_coeff: float = 0.005,
    sam_iou_thresh: float = 0.8,
) -> MethodRefinement:
    """Trident's refinement (module docstring) of a coarse map; ``mask_scores`` of the result
    are SAM's predicted IoUs and ``scores`` the refined class scores (0 where no mask refined).

    Args:
        probs: float ``(K, H, W)`` class probabilities (Trident's ``seg_logits``).
        labels: int ``(H, W)`` coarse labels in ``[0, K)`` (after the probability threshold).
        predictor: a ``SamPredictor`` with the embedding of Trident's SAM image set.
        coarse_thresh, minimal_area, sam_mask_coeff, sam_iou_thresh: Trident's options.
    """
    if not isinstance(probs, Tensor) or probs.ndim != 3:
        raise TypeError("probs must be a (K, H, W) tensor")
    k, h, w = probs.shape
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (h, w):
        raise ValueError(f"labels must be a ({h}, {w}) tensor")
    if not getattr(predictor, "is_image_set", False):
        raise RuntimeError("the SAM predictor has no image set")
    probs, labels = probs.float().cpu(), labels.long().cpu()
    empty = MethodRefinement(
        labels.numpy().copy(), np.zeros((k, h, w), np.float32), np.zeros((0, h, w), bool),
        np.zeros(0, np.int64), np.zeros(0, np.float32),
    )  # fmt: skip
    dh, dw = h // 2, w // 2
    if dh < 1 or dw < 1:
        return empty
    lab_down = F.interpolate(labels[None, None].float(), (dh, dw), mode="nearest")[0, 0].long()
    p_down = F.interpolate(probs[None], (dh, dw), mode="bilinear", align_corners=False)[0]
    if coarse_thresh > 0:
        lab_down[p_down.max(0).values < coarse_thresh] = k  # no class
    lab_np = lab_down.numpy()
    model = predictor.model
    side = 4 * int(model.prompt_encoder.image_embedding_size[0])
    th = predictor.transform
    ph, pw = th.get_preprocess_shape(h, w, side)
    device = predictor.device
    kept_logits, kept_classes, kept_ious = [], [], []
    failed = np.zeros((dh, dw), bool)
    for c in range(k):
        if p_down[c].max() < coarse_thresh:
            continue
        regions = _components(lab_np == c, minimal_area)
        if not regions:
            continue
        prompts = [_prompts(r, p_down[c]) for r in regions]
        boxes = th.apply_boxes_torch(torch.tensor([b for b, _ in prompts]), (dh, dw))
        points = th.apply_coords_torch(torch.tensor([p for _, p in prompts]), (dh, dw))
        dense = F.interpolate(p_down[c][None, None], (ph, pw), mode="bilinear",
                              align_corners=False)[0]  # fmt: skip
        dense = F.pad(dense, (0, side - pw, 0, side - ph), value=0.0)
        dense = torch.where(dense > coarse_thresh, sam_mask_coeff * dense, 0.0).float()
        with torch.inference_mode():
            _, ious, low = predictor.predict_torch(
                point_coords=points[:, None].float().to(device),
                point_labels=torch.ones((len(prompts), 1), device=device),
                boxes=boxes.float().to(device),
                mask_input=dense.to(device),
                multimask_output=False,
            )
        valid = (ious[:, 0] > sam_iou_thresh).cpu()
        for r, ok in zip(regions, valid.tolist(), strict=True):
            if not ok:
                failed |= r
        if valid.any():
            kept_logits.append(low[valid.to(low.device)].float())
            kept_classes += [c] * int(valid.sum())
            kept_ious.append(ious[valid.to(ious.device), 0].float().cpu())
    if not kept_logits:
        return empty
    with torch.inference_mode():
        logits = model.postprocess_masks(
            torch.cat(kept_logits), predictor.input_size, predictor.original_size
        ).cpu()
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
    logits = logits[:, 0]
    masks = logits > model.mask_threshold
    sig = logits.sigmoid()
    classes = torch.tensor(kept_classes)
    scores = torch.zeros((k, h, w))
    for c in torch.unique(classes).tolist():
        sel = classes == c
        scores[c] = (sig[sel] * probs[c]).max(0).values * masks[sel].any(0)
    out = torch.where(scores.sum(0) == 0, labels, scores.argmax(0))
    if failed.any():
        area = F.interpolate(torch.from_numpy(failed)[None, None].float(), (h, w), mode="nearest")
        scores = torch.maximum(scores, area[0] * probs)
    return MethodRefinement(
        out.numpy(), scores.numpy().astype(np.float32), masks.numpy(),
        classes.numpy().astype(np.int64), torch.cat(kept_ious).numpy().astype(np.float32),
    )  # fmt: skip
