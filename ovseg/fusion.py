"""Fusion: scored, possibly overlapping masks -> one dense semantic map.

The rule:

1. each mask takes its most probable class, with that probability as its score;
2. a mask is kept if its score is > 0 and >= ``score_threshold`` (a mask won by a background
   name has all-zero scores and is dropped);
3. each pixel goes to the kept mask with the highest score covering it (ties go to the smaller
   mask, the more specific one);
4. pixels covered by no kept mask are ``UNLABELED`` (-1) with confidence 0.

Each kept mask that still owns pixels becomes a :class:`~ovseg.result.Segment` holding exactly
those pixels, so segments never overlap and ``segment_map`` is a panoptic-style instance map.
"""

from __future__ import annotations

import numpy as np

from ovseg.result import UNLABELED, Segment, SegmentationResult
from ovseg.structures import masks_to_boxes


def fuse(
    masks: np.ndarray,
    scores: np.ndarray,
    classes: list[str],
    *,
    score_threshold: float = 0.0,
    image: np.ndarray | None = None,
    proposal_scores: np.ndarray | None = None,
) -> SegmentationResult:
    """Fuse masks bool (N, H, W) with class probabilities float (N, K) into a result.

    Args:
        masks: bool (N, H, W).
        scores: float (N, K) in [0, 1], K = len(classes).
        classes: the class names.
        score_threshold: minimum class probability for a mask to label pixels, in [0, 1].
        image: optional RGB uint8 (H, W, 3) kept on the result for overlays.
        proposal_scores: optional (N,) proposer quality scores copied to the segments.
    """
    masks = np.asarray(masks)
    scores = np.asarray(scores, dtype=np.float32)
    if masks.ndim != 3 or masks.dtype != bool:
        raise ValueError(f"masks must be bool (N, H, W), got {masks.dtype} {masks.shape}")
    n, h, w = masks.shape
    if scores.shape != (n, len(classes)):
        raise ValueError(f"scores must be (N, K) = {(n, len(classes))}, got {scores.shape}")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if n and (not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1):
        raise ValueError("scores must be probabilities in [0, 1]")
    prop = np.ones(n, np.float32) if proposal_scores is None else np.asarray(proposal_scores)

    best = scores.argmax(1) if n else np.zeros(0, int)
    score = scores.max(1) if n else np.zeros(0, np.float32)
    areas = masks.reshape(n, h * w).sum(1)
    keep = np.flatnonzero((score > 0) & (score >= score_threshold) & (areas > 0))
    # Paint from weakest to strongest so the best mask wins; on equal scores, larger first.
    order = keep[np.lexsort((-areas[keep], score[keep]))]
    owner = np.full((h, w), -1, np.int64)
    for i in order:
        owner[masks[i]] = i

    segments: list[Segment] = []
    segment_map = np.full((h, w), -1, np.int32)
    for i in keep[np.argsort(-score[keep], kind="stable")]:
        own = owner == i
        area = int(own.sum())
        if area == 0:
            continue
        segment_map[own] = len(segments)
        box = masks_to_boxes(own[None])[0]
        segments.append(
            Segment(
                id=len(segments) + 1,
                mask=own,
                class_index=int(best[i]),
                score=float(score[i]),
                box=tuple(int(v) for v in box),
                area=area,
                proposal_score=float(prop[i]),
            )
        )

    covered = owner >= 0
    label_map = np.full((h, w), UNLABELED, np.int32)
    confidence = np.zeros((h, w), np.float32)
    label_map[covered] = best[owner[covered]]
    confidence[covered] = score[owner[covered]]
    return SegmentationResult(
        label_map=label_map,
        confidence=confidence,
        classes=list(classes),
        segments=segments,
        segment_map=segment_map,
        image=image,
    )
