"""Fusion: a method's map, its own instances and scored masks -> one result.

:func:`compose` is the one rule every path uses (a dense method, a method that labels whole
regions or refines with SAM, prompted objects, video tracks, masks alone):

1. each mask takes its most probable class, with that probability as its score; it is kept
   if the score is > 0 and >= ``score_threshold`` (a mask won by a background name has
   all-zero scores and is dropped);
2. each pixel a kept mask covers goes to the highest-scoring one (ties go to the smaller
   mask, the more specific one) and takes its class and score; other pixels keep the map's
   label (``UNLABELED``, -1, for no class) and confidence;
3. segments, none overlapping, so that ``segment_map`` is a panoptic-style instance map: the
   kept masks that own pixels (strongest first), then the method's own instances (each owns
   its pixels that carry its class and nothing owns yet, highest instance score first), then
   one segment per class for the labelled pixels left.

:func:`fuse` is the rule on masks alone (every other pixel unlabeled).
"""

from __future__ import annotations

import numpy as np

from ovseg.result import UNLABELED, Segment, SegmentationResult
from ovseg.structures import mask_class_scores, masks_to_boxes

__all__ = ["compose", "fuse", "mask_class_scores"]


def _paint(masks: np.ndarray, scores: np.ndarray, score_threshold: float):
    """The owner ``(H, W)`` int32 (-1: none) of each pixel, or None when no mask is kept,
    and the kept masks strongest first."""
    n, h, w = masks.shape
    best = scores.argmax(1) if n else np.zeros(0, int)
    score = scores.max(1) if n else np.zeros(0, np.float32)
    areas = masks.reshape(n, h * w).sum(1)
    keep = np.flatnonzero((score > 0) & (score >= score_threshold) & (areas > 0))
    if not len(keep):
        return None, best, score, keep
    # Paint from weakest to strongest so the best mask wins; on equal scores, larger first.
    owner = np.full((h, w), -1, np.int32)
    for i in keep[np.lexsort((-areas[keep], score[keep]))]:
        owner[masks[i]] = i
    return owner, best, score, keep[np.argsort(-score[keep], kind="stable")]


def _check(masks, scores, k: int, score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    scores = np.asarray(scores, dtype=np.float32)
    if masks.ndim != 3 or masks.dtype != bool:
        raise ValueError(f"masks must be bool (N, H, W), got {masks.dtype} {masks.shape}")
    n = masks.shape[0]
    if scores.shape != (n, k):
        raise ValueError(f"scores must be (N, K) = {(n, k)}, got {scores.shape}")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if n and (not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1):
        raise ValueError("scores must be probabilities in [0, 1]")
    return masks, scores


def compose(
    labels: np.ndarray,
    probs: np.ndarray | None,
    classes: list[str],
    *,
    confidence: np.ndarray | None = None,
    instances: tuple | None = None,
    masks: np.ndarray | None = None,
    mask_scores: np.ndarray | None = None,
    proposal_scores: np.ndarray | None = None,
    track_ids: np.ndarray | None = None,
    score_threshold: float = 0.0,
    image: np.ndarray | None = None,
) -> SegmentationResult:
    """A method's map with its instances and scored masks, by the rule of the module docstring.

    Args:
        labels: int (H, W), class indices in ``[0, K)`` or ``UNLABELED``: the method's map.
        probs: float (K, H, W) class probabilities the labels came from (the confidence of a
            map pixel is its label's probability), or None (confidence 0).
        classes: the K class names.
        confidence: optional float (H, W) in [0, 1], the method's own score of each pixel's
            label where > 0 (elsewhere the probability is used).
        instances: optional ``(masks bool (M, H, W), classes int (M,), scores float (M,))``:
            the method's own instances (any item may be None: no instances).
        masks: optional bool (N, H, W) to paint over the map, with ``mask_scores`` float
            (N, K) in [0, 1], ``proposal_scores`` (N,) (copied to the segments) and
            ``track_ids`` (N,) (video object ids, copied to ``Segment.track_id``).
        score_threshold: minimum mask score for a mask to label pixels, in [0, 1].
        image: optional RGB uint8 (H, W, 3) kept on the result for overlays.

    ``labels`` (int32) and ``confidence`` (float32, 0 where unlabeled) become the result's
    arrays without a copy when no mask paints over them (an output-sized array is held once).
    """
    labels = np.asarray(labels, dtype=np.int32)  # not copied unless a mask paints over it
    h, w = labels.shape
    k = len(classes)
    if probs is not None and (np.ndim(probs) != 3 or np.shape(probs) != (k, h, w)):
        raise ValueError(
            f"probs must be (K, H, W) = {(k, h, w)}, got {np.shape(probs)} and labels {(h, w)}"
        )
    if masks is None:
        masks, mask_scores = np.zeros((0, h, w), bool), np.zeros((0, k), np.float32)
    masks, mask_scores = _check(masks, mask_scores, k, score_threshold)
    n = masks.shape[0]
    if masks.shape[1:] != (h, w):
        raise ValueError(f"masks are {masks.shape[1:]}, labels {(h, w)}")
    prop = np.ones(n, np.float32) if proposal_scores is None else np.asarray(proposal_scores)
    if track_ids is not None and len(track_ids) != n:
        raise ValueError(f"track_ids must have one id per mask ({n}), got {len(track_ids)}")

    conf = _confidence(labels, probs, confidence)
    owner, best, score, order = _paint(masks, mask_scores, score_threshold)
    if owner is not None:
        covered = owner >= 0
        labels, conf = labels.copy(), conf.copy()
        labels[covered] = best[owner[covered]]
        conf[covered] = score[owner[covered]]

    segments: list[Segment] = []
    segment_map = np.full((h, w), -1, np.int32)

    def add(own: np.ndarray, c: int, score: float, proposal: float, track=None) -> None:
        segment_map[own] = len(segments)
        segments.append(
            Segment(
                id=len(segments) + 1,
                mask=own,
                class_index=c,
                score=score,
                box=tuple(int(v) for v in masks_to_boxes(own[None])[0]),
                area=int(own.sum()),
                proposal_score=proposal,
                track_id=track,
            )
        )

    for i in order:  # 1. the kept masks
        own = owner == i
        if own.any():
            track = None if track_ids is None else int(track_ids[i])
            add(own, int(best[i]), float(score[i]), float(prop[i]), track)
    inst_masks, inst_classes, inst_scores = instances or (None, None, None)
    if inst_masks is not None and len(inst_masks):  # 2. the method's instances
        inst_scores = np.ones(len(inst_masks)) if inst_scores is None else inst_scores
        for i in np.argsort(-np.asarray(inst_scores, np.float32), kind="stable"):
            c = int(inst_classes[i])
            own = inst_masks[i] & (labels == c) & (segment_map < 0)
            if 0 <= c < k and own.any():
                add(own, c, float(conf[own].mean()), float(inst_scores[i]))
    for c in _classes_left(labels, segment_map, k):  # 3. the labelled pixels left, per class
        own = labels == c
        if segments:
            own &= segment_map < 0
        add(own, int(c), float(conf[own].mean()), 0.0)
    return SegmentationResult(
        label_map=labels,
        confidence=conf,
        classes=list(classes),
        segments=segments,
        segment_map=segment_map,
        image=image,
    )


def _confidence(labels: np.ndarray, probs, confidence) -> np.ndarray:
    """float32 ``(H, W)``: ``confidence`` where > 0 on a labelled pixel, else the probability
    of the pixel's label (0 without ``probs`` or where ``UNLABELED``). ``confidence`` itself
    when it already is that (no copy of an output-sized array)."""
    labelled = labels != UNLABELED
    if probs is None and confidence is None:
        return np.zeros(labels.shape, np.float32)
    if probs is None:
        conf = np.asarray(confidence, np.float32)
        if conf.min() < 0 or (conf[~labelled] > 0).any():
            conf = np.where(labelled & (conf > 0), conf, np.float32(0))
        return conf
    index = np.clip(labels, 0, len(probs) - 1)[None].astype(np.int64)
    conf = np.where(labelled, np.take_along_axis(probs, index, 0)[0], 0.0).astype(np.float32)
    if confidence is not None:
        np.copyto(conf, confidence, where=(confidence > 0) & labelled)
    return conf


def _classes_left(labels: np.ndarray, segment_map: np.ndarray, k: int, rows: int = 512):
    """The classes in ``[0, k)`` of the labelled pixels no segment owns, ascending (counted
    in blocks of ``rows`` rows: no output-sized temporary)."""
    counts = np.zeros(k + 1, np.int64)
    for r in range(0, labels.shape[0], rows):
        lab = labels[r : r + rows]
        free = lab[segment_map[r : r + rows] < 0]
        counts += np.bincount(free.ravel() + 1, minlength=k + 1)
    return np.flatnonzero(counts[1:])


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
    """Fuse masks bool (N, H, W) with class probabilities float (N, K) into a result: the rule
    of :func:`compose` on an empty map (pixels no kept mask covers are ``UNLABELED``).

    Args:
        masks: bool (N, H, W).
        scores: float (N, K) in [0, 1], K = len(classes).
        classes: the class names.
        score_threshold: minimum class probability for a mask to label pixels, in [0, 1].
        image: optional RGB uint8 (H, W, 3) kept on the result for overlays.
        proposal_scores: optional (N,) proposer quality scores copied to the segments.
        track_ids: optional (N,) video object ids copied to the segments' ``track_id``.
    """
    masks, scores = _check(masks, scores, len(classes), score_threshold)
    empty = np.full(masks.shape[1:], UNLABELED, np.int32)
    return compose(empty, None, classes, masks=masks, mask_scores=scores,
                   proposal_scores=proposal_scores, track_ids=track_ids,
                   score_threshold=score_threshold, image=image)  # fmt: skip
