"""SAM 2 automatic masks: the point grid decoded in batches, with ``SAM2AutomaticMaskGenerator``'s
filters and defaults (one crop layer).

For each batch of ``points_per_batch`` grid points the mask decoder runs once on the cached image
embedding (three candidates per point with ``multimask_output``, else one). Then, exactly as
Meta's generator: optionally one mask-to-mask refinement (``use_m2m``: each candidate's
low-resolution logits go back in as a mask prompt with its point, one output mask); predicted
IoU ``> pred_iou_thresh``; stability score (the IoU of the mask thresholded at ``+-offset``,
on the logits upsampled to the image) ``>= stability_score_thresh``; box NMS at
``box_nms_thresh`` over all survivors, by predicted IoU.

What ovseg reorganises (same results): the IoU filter runs before upsampling, so only its
survivors are upsampled to the image size; survivors of the stability filter keep their
low-resolution logits, and only the masks NMS keeps are upsampled again for the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.amg import build_point_grid
from torchvision.ops import batched_nms

from ovseg.proposals.options import GridOptions, Sam2GridOptions
from ovseg.proposals.sam2 import MASK_THRESHOLD, Sam2Proposer
from ovseg.structures import Masks


@dataclass
class _Kept:
    low: list  # unclamped low-resolution logits (n, S, S) of the kept masks, per batch
    scores: list  # predicted IoU (n,)
    boxes: list  # XYXY boxes of the full-resolution masks (n, 4), x1/y1 inclusive as Meta's


def automatic_masks_sam2(proposer: Sam2Proposer, options: GridOptions = Sam2GridOptions()) -> Masks:
    """Grid proposals for the image set on ``proposer``; masks sorted by predicted IoU, in the
    order and with the values of ``SAM2AutomaticMaskGenerator.generate``.

    ``options`` may be a plain :class:`GridOptions` (then ``multimask_output=True`` and
    ``use_m2m=False``).
    """
    multimask = getattr(options, "multimask_output", True)
    use_m2m = getattr(options, "use_m2m", False)
    if options.adaptive:
        raise ValueError("adaptive applies to SAM 1's grid only, not to SAM 2")
    with proposer.lock, torch.inference_mode():
        h, w = proposer.image_shape
        device = proposer.device
        grid = build_point_grid(options.points_per_side) * np.array([[w, h]])
        kept = _Kept([], [], [])
        for start in range(0, len(grid), options.points_per_batch):
            points = torch.as_tensor(
                grid[start : start + options.points_per_batch], dtype=torch.float32, device=device
            )
            coords = proposer.to_input_frame(points)[:, None]
            labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)
            low, iou = proposer.decode(coords, labels, multimask_output=multimask)
            k = low.shape[1]
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            if use_m2m:
                low, iou = _refine(proposer, coords.repeat_interleave(k, 0), low, options)
            _filter(proposer, low, iou, options, kept)
        if not kept.scores:
            return Masks.from_masks(np.zeros((0, h, w), bool), np.zeros(0, np.float32))
        low, scores, boxes = (torch.cat(x) for x in (kept.low, kept.scores, kept.boxes))
        keep = batched_nms(
            boxes.float(), scores, torch.zeros_like(boxes[:, 0]), options.box_nms_thresh
        )
        if options.max_masks is not None:
            keep = keep[: options.max_masks]
        return _upsample(proposer, low[keep], scores[keep])


def _refine(proposer: Sam2Proposer, coords, low, options):
    """One mask-to-mask step: each candidate's clamped logits with its point, one mask out."""
    lows, ious = [], []
    for s in range(0, len(low), options.points_per_batch):
        chunk = slice(s, s + options.points_per_batch)
        c = coords[chunk]
        labels = torch.ones(c.shape[:2], dtype=torch.int, device=c.device)
        mask_in = low[chunk, None].clamp(-32.0, 32.0)
        out, iou = proposer.decode(c, labels, mask_in, multimask_output=False)
        lows.append(out[:, 0])
        ious.append(iou[:, 0])
    return torch.cat(lows), torch.cat(ious)


def _filter(proposer: Sam2Proposer, low, iou, o: GridOptions, kept: _Kept) -> None:
    """Predicted IoU and stability filters of one batch; appends the survivors to ``kept``."""
    if o.pred_iou_thresh > 0:
        keep = iou > o.pred_iou_thresh
        low, iou = low[keep], iou[keep]
    if len(low) == 0:
        return
    masks = proposer.upsample(low[:, None])[:, 0]
    if o.stability_score_thresh > 0:
        stability = _stability(masks, MASK_THRESHOLD, o.stability_score_offset)
        keep = stability >= o.stability_score_thresh
        low, iou, masks = low[keep], iou[keep], masks[keep]
    if len(low) == 0:
        return
    kept.low.append(low)
    kept.scores.append(iou)
    kept.boxes.append(_boxes(masks > MASK_THRESHOLD))


def _stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at ``threshold + offset`` and ``threshold - offset``."""
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int32)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return inter / union


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """bool (N, H, W) -> XYXY boxes with inclusive x1, y1 (zeros for empty masks), as the box
    NMS of Meta's generator sees them."""
    rows, cols = masks.any(-1), masks.any(-2)
    idx_r = torch.arange(rows.shape[-1], device=masks.device)
    idx_c = torch.arange(cols.shape[-1], device=masks.device)
    big = 1 << 30
    x0 = torch.where(cols, idx_c, big).amin(-1)
    x1 = torch.where(cols, idx_c, -1).amax(-1)
    y0 = torch.where(rows, idx_r, big).amin(-1)
    y1 = torch.where(rows, idx_r, -1).amax(-1)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    return torch.where(masks.flatten(1).any(-1, keepdim=True), boxes, torch.zeros_like(boxes))


def _upsample(proposer: Sam2Proposer, low, scores, chunk: int = 32) -> Masks:
    h, w = proposer.image_shape
    out = np.zeros((len(scores), h, w), bool)
    for s in range(0, len(scores), chunk):
        up = F.interpolate(low[s : s + chunk, None], (h, w), mode="bilinear", align_corners=False)[
            :, 0
        ]
        out[s : s + chunk] = (up > MASK_THRESHOLD).cpu().numpy()
    return Masks.from_masks(out, scores.float().cpu().numpy())
