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
    track_ids: np.ndarray | None = None,
) -> SegmentationResult:
    """Fuse masks bool (N, H, W) with class probabilities float (N, K) into a result.

    Args:
        masks: bool (N, H, W).
        scores: float (N, K) in [0, 1], K = len(classes).
        classes: the class names.
        score_threshold: minimum class probability for a mask to label pixels, in [0, 1].
        image: optional RGB uint8 (H, W, 3) kept on the result for overlays.
        proposal_scores: optional (N,) proposer quality scores copied to the segments.
        track_ids: optional (N,) video object ids copied to the segments' ``track_id``.
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
    if track_ids is not None and len(track_ids) != n:
        raise ValueError(f"track_ids must have one id per mask ({n}), got {len(track_ids)}")

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
                track_id=None if track_ids is None else int(track_ids[i]),
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


def mask_class_scores(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mean class probability inside each mask: bool (N, H, W), float (K, H, W) -> (N, K)."""
    n = masks.shape[0]
    k = probs.shape[0]
    if n == 0:
        return np.zeros((0, k), np.float32)
    flat = masks.reshape(n, -1).astype(np.float32)
    area = flat.sum(1, keepdims=True)
    sums = flat @ probs.reshape(k, -1).T.astype(np.float32)
    return np.clip(sums / np.maximum(area, 1.0), 0.0, 1.0).astype(np.float32)


def _label_probability(labels, probs, k: int, confidence) -> np.ndarray:
    """The probability of each pixel's label: ``confidence`` as given, else read from
    ``probs`` (K, H, W); checked against ``labels``' shape."""
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32)
        if confidence.shape != labels.shape:
            raise ValueError(f"confidence is {confidence.shape}, labels {labels.shape}")
        return confidence
    if probs is None:
        raise ValueError("give probs (K, H, W) or the confidence of each label (H, W)")
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] != k or labels.shape != probs.shape[1:]:
        raise ValueError(
            f"probs must be (K, H, W) = ({k}, *labels.shape), got {probs.shape} and labels "
            f"{labels.shape}"
        )
    return np.take_along_axis(probs, np.clip(labels, 0, k - 1)[None].astype(np.int64), 0)[0]


def fuse_dense(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    *,
    masks: np.ndarray | None = None,
    proposal_scores: np.ndarray | None = None,
    score_threshold: float = 0.0,
    image: np.ndarray | None = None,
    mask_scores: np.ndarray | None = None,
    track_ids: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> SegmentationResult:
    """A dense label map, optionally refined by masks, as a result whose segments partition
    the labelled pixels.

    Args:
        labels: int (H, W), class indices or ``UNLABELED``: the method's own prediction.
        probs: float (K, H, W) class probabilities the labels came from, or None with
            ``confidence`` (and ``mask_scores`` when there are masks): a map too large to hold
            (see :class:`~ovseg.methods.pixelmap.PixelMap`: ``pick`` and ``mask_scores``).
        classes: the K class names.
        masks: optional bool (N, H, W). Each mask takes the class of highest mean probability
            inside it, with that mean as its score, and is fused by the rule of :func:`fuse`
            (score threshold, strongest mask wins); its pixels take its class.
        proposal_scores: optional (N,) proposer scores of the masks.
        score_threshold: minimum mask score for a mask to label pixels.
        image: optional RGB uint8 (H, W, 3).
        mask_scores: optional float (N, K) class probabilities of the masks, used instead of
            their mean probability inside (video: each track's running mean).
        track_ids: optional (N,) video object ids of the masks (see :func:`fuse`).
        confidence: optional float (H, W), the probability of each pixel's label (used
            instead of reading it from ``probs``).

    Segments: the masks that own pixels (instances), then one segment per class for the
    labelled pixels no mask owns (score: the mean probability of the class over them).
    ``confidence`` is the probability of each pixel's class (a mask's score inside it).
    """
    labels = np.asarray(labels)
    k = len(classes)
    picked = _label_probability(labels, probs, k, confidence)
    h, w = labels.shape
    if masks is None:
        masks = np.zeros((0, h, w), bool)
    if mask_scores is None and probs is None and len(masks):
        raise ValueError("masks without probs need their mask_scores")
    if mask_scores is None:
        mask_scores = mask_class_scores(masks, np.asarray(probs, np.float32))
    base = fuse(masks, mask_scores, classes, score_threshold=score_threshold, image=image,
                proposal_scores=proposal_scores, track_ids=track_ids)  # fmt: skip
    label_map = np.where(base.label_map != UNLABELED, base.label_map, labels).astype(np.int32)
    dense_conf = np.where(labels != UNLABELED, picked, 0.0)
    confidence = np.where(base.label_map != UNLABELED, base.confidence, dense_conf)
    segments = list(base.segments)
    segment_map = base.segment_map.copy()
    rest = (segment_map < 0) & (label_map != UNLABELED)
    for c in np.unique(label_map[rest]):
        own = rest & (label_map == c)
        segment_map[own] = len(segments)
        segments.append(
            Segment(
                id=len(segments) + 1,
                mask=own,
                class_index=int(c),
                score=float(confidence[own].mean()),
                box=tuple(int(v) for v in masks_to_boxes(own[None])[0]),
                area=int(own.sum()),
                proposal_score=0.0,
            )
        )
    return SegmentationResult(
        label_map=label_map,
        confidence=confidence.astype(np.float32),
        classes=list(classes),
        segments=segments,
        segment_map=segment_map,
        image=image,
    )


def fuse_regions(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    regions: np.ndarray,
    *,
    image: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> SegmentationResult:
    """A final label map from a method that labels whole regions (CorrCLIP's vote) as a result
    whose segments are those regions.

    Args:
        labels: int (H, W), class indices or ``UNLABELED``: the method's final map.
        probs: float (K, H, W) class probabilities the labels came from, or None with
            ``confidence``.
        classes: the K class names.
        regions: int (H, W) region id map; the smallest id present is the unsegmented pixels.
        confidence: optional float (H, W), the probability of each pixel's label.

    Segments: each region's labelled pixels (one segment per label inside it: a single one
    after a vote), then one segment per class for the labelled pixels outside every region.
    Scores and ``confidence`` are the probability of each pixel's class (segment: the mean).
    """
    labels = np.asarray(labels)
    regions = np.asarray(regions)
    picked = _label_probability(labels, probs, len(classes), confidence)
    if regions.shape != labels.shape:
        raise ValueError(f"regions are {regions.shape}, labels {labels.shape}")
    confidence = np.where(labels != UNLABELED, picked, 0.0).astype(np.float32)
    values, inverse = np.unique(regions, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    pieces = [inverse == r for r in range(1, len(values))]
    pieces.append(inverse == 0)
    segments: list[Segment] = []
    segment_map = np.full(labels.shape, -1, np.int32)
    for i, piece in enumerate(pieces):
        for c in np.unique(labels[piece]):
            if c == UNLABELED:
                continue
            own = piece & (labels == c)
            segment_map[own] = len(segments)
            segments.append(
                Segment(
                    id=len(segments) + 1,
                    mask=own,
                    class_index=int(c),
                    score=float(confidence[own].mean()),
                    box=tuple(int(v) for v in masks_to_boxes(own[None])[0]),
                    area=int(own.sum()),
                    proposal_score=1.0 if i < len(pieces) - 1 else 0.0,
                )
            )
    return SegmentationResult(
        label_map=labels.astype(np.int32),
        confidence=confidence,
        classes=list(classes),
        segments=segments,
        segment_map=segment_map,
        image=image,
    )


def fuse_labelled(
    labels: np.ndarray,
    confidence: np.ndarray,
    classes: list[str],
    *,
    masks: np.ndarray,
    mask_classes: np.ndarray,
    proposal_scores: np.ndarray,
    image: np.ndarray | None = None,
) -> SegmentationResult:
    """A final label map (kept as given) with the masks behind it as instances.

    For a method that labels pixels itself from class-tagged masks (Trident's SAM refinement):
    each mask, highest proposal score first, owns its pixels that carry its class and no
    earlier mask owns (masks of classes outside ``[0, K)`` are skipped); the labelled pixels
    left become one segment per class. A segment's score is the mean ``confidence`` over it.

    Args:
        labels: int (H, W), class indices or ``UNLABELED``.
        confidence: float (H, W) in [0, 1], the score of each pixel's label.
        classes: the K class names.
        masks: bool (N, H, W); mask_classes: int (N,); proposal_scores: float (N,).
        image: optional RGB uint8 (H, W, 3).
    """
    labels = np.asarray(labels).astype(np.int32)
    confidence = np.asarray(confidence, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    if confidence.shape != labels.shape or masks.shape[1:] != labels.shape:
        raise ValueError("labels, confidence and masks must share (H, W)")
    if len(mask_classes) != n or len(proposal_scores) != n:
        raise ValueError("mask_classes and proposal_scores need one entry per mask")
    k = len(classes)
    segments: list[Segment] = []
    segment_map = np.full(labels.shape, -1, np.int32)

    def add(own: np.ndarray, c: int, proposal: float) -> None:
        segment_map[own] = len(segments)
        segments.append(
            Segment(
                id=len(segments) + 1,
                mask=own,
                class_index=c,
                score=float(confidence[own].mean()),
                box=tuple(int(v) for v in masks_to_boxes(own[None])[0]),
                area=int(own.sum()),
                proposal_score=proposal,
            )
        )

    for i in np.argsort(-np.asarray(proposal_scores, np.float32), kind="stable"):
        c = int(mask_classes[i])
        own = masks[i] & (labels == c) & (segment_map < 0)
        if 0 <= c < k and own.any():
            add(own, c, float(proposal_scores[i]))
    rest = (segment_map < 0) & (labels != UNLABELED)
    for c in np.unique(labels[rest]):
        add(rest & (labels == c), int(c), 0.0)
    return SegmentationResult(
        label_map=labels,
        confidence=confidence,
        classes=list(classes),
        segments=segments,
        segment_map=segment_map,
        image=image,
    )
