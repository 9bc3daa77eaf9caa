"""User prompts: validation of points, point labels, boxes, rough masks and scribbles, and the
policy that turns a prompt into one object (SAM 2 and SAM 3).

Coordinates follow ovseg's contract: points are ``(x, y)`` input-image pixels, boxes are
``(x0, y0, x1, y1)`` pixels (XYXY), masks are bool ``(H, W)`` arrays of the input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.structures import Masks

MAX_SCRIBBLE_POINTS = 8
MASK_POINTS = 3
MASK_PROMPT_LOGIT = 8.0
"""A rough mask as a mask prompt: this logit inside, its negative outside."""


@dataclass(frozen=True)
class Prompt:
    """Validated prompts for one image of size ``shape`` (H, W).

    Attributes:
        points: float32 (P, 2) ``(x, y)`` or None.
        point_labels: int32 (P,), 1 positive / 0 negative, or None.
        boxes: float32 (B, 4) XYXY or None.
        mask: bool (H, W) rough mask of the object, or None.
        scribble: bool (H, W) strokes drawn on the object, or None.
    """

    shape: tuple[int, int]
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask: np.ndarray | None = None
    scribble: np.ndarray | None = None

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in (self.points, self.boxes, self.mask, self.scribble))

    def all_points(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Points and labels sent to SAM: the given points, plus points sampled along a scribble,
        plus (when nothing else locates the object) points sampled inside the rough mask."""
        pts = [] if self.points is None else [self.points]
        lbl = [] if self.point_labels is None else [self.point_labels]
        sources = [(self.scribble, MAX_SCRIBBLE_POINTS)]
        if self.points is None and self.boxes is None and self.scribble is None:
            sources.append((self.mask, MASK_POINTS))
        for mask, k in sources:
            if mask is not None:
                sampled = sample_points(mask, k)
                pts.append(sampled)
                lbl.append(np.ones(len(sampled), np.int32))
        if not pts:
            return None, None
        return np.concatenate(pts).astype(np.float32), np.concatenate(lbl).astype(np.int32)


def sample_points(mask: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` deterministic (x, y) pixel centres inside a bool mask: the mask pixel nearest
    its centroid, then pixels evenly spaced in row-major order."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    first = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    rest = np.linspace(0, len(ys) - 1, num=min(k, len(ys))).round().astype(int)
    order = list(dict.fromkeys([first, *rest.tolist()]))[:k]
    return np.stack([xs[order] + 0.5, ys[order] + 0.5], axis=1).astype(np.float32)


def make_prompt(
    shape, points=None, point_labels=None, boxes=None, mask=None, scribble=None
) -> Prompt:
    """Validate raw user prompts against an image of ``shape`` (H, W) and build a Prompt.

    Raises:
        ValueError: malformed, non-finite, out-of-image or inverted coordinates; labels of the
            wrong length or not in {0, 1}; masks of the wrong size or empty; points given with
            several boxes.
        TypeError: values that are not array-like.
    """
    h, w = int(shape[0]), int(shape[1])
    pts = _as_float_array(points, "points", 2)
    if pts is not None:
        outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
        if outside.any():
            raise ValueError(
                f"points {pts[outside].tolist()} lie outside the {w}x{h} image "
                "(points are (x, y) pixels with 0 <= x < width, 0 <= y < height)"
            )
    labels = None
    if point_labels is not None and pts is None:
        raise ValueError("point_labels given without points")
    if pts is not None:
        if point_labels is None:
            labels = np.ones(len(pts), np.int32)
        else:
            labels = np.asarray(point_labels).reshape(-1)
            if len(labels) != len(pts):
                raise ValueError(f"point_labels has {len(labels)} entries for {len(pts)} points")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError(
                    f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}"
                )
            labels = labels.astype(np.int32)
            if not (labels == 1).any() and boxes is None and mask is None and scribble is None:
                raise ValueError(
                    "at least one positive point (label 1) is needed to locate an "
                    "object, unless a box or mask is given"
                )
    bxs = _as_float_array(boxes, "boxes", 4)
    if bxs is not None:
        bad = (bxs[:, 0] < 0) | (bxs[:, 1] < 0) | (bxs[:, 2] > w) | (bxs[:, 3] > h)
        if bad.any():
            raise ValueError(
                f"boxes {bxs[bad].tolist()} extend outside the {w}x{h} image "
                "(boxes are (x0, y0, x1, y1) pixels)"
            )
        inverted = (bxs[:, 2] <= bxs[:, 0]) | (bxs[:, 3] <= bxs[:, 1])
        if inverted.any():
            raise ValueError(
                f"boxes {bxs[inverted].tolist()} are inverted or empty (need x0 < x1 and y0 < y1)"
            )
        if len(bxs) > 1 and (pts is not None or mask is not None or scribble is not None):
            raise ValueError(
                "points, masks and scribbles refine a single box; with several "
                f"boxes ({len(bxs)}) give boxes alone"
            )
    return Prompt(
        (h, w),
        pts,
        labels,
        bxs,
        _as_mask(mask, "mask", (h, w)),
        _as_mask(scribble, "scribble", (h, w)),
    )


def _as_float_array(value, name: str, width: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numbers shaped (N, {width}), got {value!r}") from e
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, {width}) with N >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr.astype(np.float32)


def _as_mask(value, name: str, shape: tuple[int, int]) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].any(axis=-1)
    if arr.shape != shape:
        raise ValueError(f"{name} must be a (H, W) = {shape} array, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be a bool or numeric array, got {arr.dtype}")
        arr = arr > 0
    if not arr.any():
        raise ValueError(f"{name} is empty: no pixel is set")
    return arr


def square_mask_prompt(mask: np.ndarray, side: int) -> np.ndarray:
    """bool ``(H, W)`` -> a mask prompt ``(1, side, side)`` float32 of SAM 2 and SAM 3: the
    whole image resized bilinearly, then :data:`MASK_PROMPT_LOGIT` where it is above 0.5 and
    its negative elsewhere."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    small = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[0]
    return torch.where(small > 0.5, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT).numpy()


def predict_prompt(prompt: Prompt, predict_arrays, mask_side: int) -> Masks:
    """One object per box (points and a rough mask join a single box); a single point gives
    three candidates and keeps the one with the highest predicted IoU; other prompts ask for
    one mask. ``predict_arrays(points, labels, box, mask_logits, multimask_output)`` returns
    ``(masks (N, M, H, W) or (M, H, W), scores, logits)``; rough masks become
    :func:`square_mask_prompt` of ``mask_side``. The policy of SAM 2's and SAM 3's proposers."""
    points, labels = prompt.all_points()
    mask = None if prompt.mask is None else square_mask_prompt(prompt.mask, mask_side)
    boxes = prompt.boxes
    if boxes is not None and len(boxes) > 1:
        masks, scores, _ = predict_arrays(box=boxes, multimask_output=False)
        return Masks.from_masks(masks[:, 0], scores[:, 0])
    multimask = boxes is None and points is not None and len(points) == 1 and mask is None
    box = None if boxes is None else boxes[0]
    masks, scores, _ = predict_arrays(points, labels, box, mask, multimask)
    best = int(np.argmax(scores))
    return Masks.from_masks(masks[best : best + 1], scores[best : best + 1])
