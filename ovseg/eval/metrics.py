"""Segmentation metrics: a streaming confusion matrix (mIoU and friends) and panoptic quality.

Conventions: ground-truth maps hold class indices in ``[0, K)`` or ``ignore_index`` (excluded);
prediction maps hold class indices in ``[0, K)`` or ``UNLABELED`` (-1). Unlabeled predictions on
labelled pixels count as misses for the true class: the confusion matrix has ``K + 1`` columns,
the last one counting them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovseg.constants import UNLABELED


def _as_int_map(array: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class ConfusionMatrix:
    """Streaming confusion matrix over ``num_classes`` classes.

    ``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``; column ``num_classes``
    counts pixels left unlabeled (prediction -1). Pixels whose ground truth equals
    ``ignore_index`` are skipped. Updating is vectorised with ``np.bincount``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} collides with a class index in [0, {num_classes})"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``prediction`` and ``target`` are int (H, W) maps of the same shape.

        Raises ValueError on shape mismatch or values outside the allowed ranges.
        """
        pred = _as_int_map(prediction, "prediction")
        gt = _as_int_map(target, "target")
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {gt.shape}")
        k = self.num_classes
        valid = gt != self.ignore_index if self.ignore_index is not None else np.ones_like(gt, bool)
        gt_v, pred_v = gt[valid], pred[valid]
        if gt_v.size and (gt_v.min() < 0 or gt_v.max() >= k):
            bad = np.unique(gt_v[(gt_v < 0) | (gt_v >= k)])[:5].tolist()
            raise ValueError(
                f"target values {bad} outside [0, {k}) and not ignore_index={self.ignore_index}"
            )
        if pred_v.size and (pred_v.min() < UNLABELED or pred_v.max() >= k):
            bad = np.unique(pred_v[(pred_v < UNLABELED) | (pred_v >= k)])[:5].tolist()
            raise ValueError(f"prediction values {bad} outside [0, {k}) and not UNLABELED (-1)")
        pred_v = np.where(pred_v == UNLABELED, k, pred_v)
        counts = np.bincount(gt_v * (k + 1) + pred_v, minlength=k * (k + 1))
        self.matrix += counts.reshape(k, k + 1)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another matrix with the same number of classes."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.matrix += other.matrix

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 (K,); NaN for classes absent from prediction and ground truth."""
        tp = np.diag(self.matrix[:, : self.num_classes]).astype(np.float64)
        gt_count = self.matrix.sum(axis=1)
        pred_count = self.matrix[:, : self.num_classes].sum(axis=0)
        union = gt_count + pred_count - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall TP / GT pixels, float64 (K,); NaN for classes absent from the GT."""
        tp = np.diag(self.matrix[:, : self.num_classes]).astype(np.float64)
        gt_count = self.matrix.sum(axis=1)
        return np.where(gt_count > 0, tp / np.maximum(gt_count, 1), np.nan)

    def scores(self) -> dict[str, float | np.ndarray]:
        """All scores: ``iou`` (K,), ``miou``, ``fwiou``, ``pixel_accuracy``, ``mean_accuracy``,
        ``accuracy`` (K,). Means skip NaN classes; values are fractions in [0, 1] (NaN if empty).
        """
        iou = self.iou()
        acc = self.class_accuracy()
        total = self.total
        gt_count = self.matrix.sum(axis=1).astype(np.float64)
        tp_sum = float(np.trace(self.matrix[:, : self.num_classes]))
        present = ~np.isnan(iou)
        nan = float("nan")
        freq = gt_count / total if total else gt_count
        weighted = freq > 0
        return {
            "iou": iou,
            "accuracy": acc,
            "miou": float(np.mean(iou[present])) if present.any() else nan,
            "fwiou": float(np.sum(freq[weighted] * iou[weighted])) if total else nan,
            "pixel_accuracy": tp_sum / total if total else nan,
            "mean_accuracy": float(np.nanmean(acc)) if (~np.isnan(acc)).any() else nan,
        }


@dataclass
class PanopticScores:
    """PQ, SQ, RQ (fractions, averaged over classes that occur) and per-class arrays (K,)."""

    pq: float
    sq: float
    rq: float
    per_class_pq: np.ndarray
    per_class_sq: np.ndarray
    per_class_rq: np.ndarray


class PanopticQuality:
    """Streaming panoptic quality (Kirillov et al., 2019).

    Segments are given as an int (H, W) id map (``-1`` = no segment / void) plus a class per
    id. A predicted and a true segment of the same class match when their IoU exceeds 0.5
    (unique by construction); IoU excludes predicted pixels on void ground truth. Unmatched
    true segments are false negatives; unmatched predicted segments are false positives unless
    more than half of them lies on void. Per class: PQ = sum IoU / (TP + FP/2 + FN/2),
    SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2); the reported values average classes with
    TP + FP + FN > 0 (SQ over classes with TP > 0 counted as 0 otherwise, as PQ = SQ * RQ).
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.iou_sum = np.zeros(num_classes, np.float64)
        self.tp = np.zeros(num_classes, np.int64)
        self.fp = np.zeros(num_classes, np.int64)
        self.fn = np.zeros(num_classes, np.int64)

    def _check(self, ids: np.ndarray, classes: Sequence[int], name: str) -> np.ndarray:
        ids = _as_int_map(ids, f"{name}_ids")
        cls = np.asarray(classes, dtype=np.int64).reshape(-1)
        if ids.size and ids.max() >= len(cls):
            raise ValueError(
                f"{name}_ids refers to segment {ids.max()} but only {len(cls)} classes given"
            )
        if ids.size and ids.min() < -1:
            raise ValueError(f"{name}_ids must be >= -1")
        if cls.size and (cls.min() < 0 or cls.max() >= self.num_classes):
            raise ValueError(f"{name}_classes must lie in [0, {self.num_classes})")
        return cls

    def update(
        self,
        pred_ids: np.ndarray,
        pred_classes: Sequence[int],
        gt_ids: np.ndarray,
        gt_classes: Sequence[int],
    ) -> None:
        """Add one image. ``*_ids``: int (H, W), segment index or -1; ``*_classes[i]``: class of
        segment ``i``."""
        p_cls = self._check(pred_ids, pred_classes, "pred")
        g_cls = self._check(gt_ids, gt_classes, "gt")
        p = np.asarray(pred_ids, np.int64)
        g = np.asarray(gt_ids, np.int64)
        if p.shape != g.shape:
            raise ValueError(f"pred_ids shape {p.shape} != gt_ids shape {g.shape}")
        n_p, n_g = len(p_cls), len(g_cls)
        # joint histogram with an extra bin (index 0) for "none" on each side
        joint = np.bincount(
            (g.ravel() + 1) * (n_p + 1) + (p.ravel() + 1), minlength=(n_g + 1) * (n_p + 1)
        ).reshape(n_g + 1, n_p + 1)
        gt_area = joint[1:, :].sum(axis=1)
        pred_area = joint[:, 1:].sum(axis=0)
        pred_void = joint[0, 1:]
        inter = joint[1:, 1:]
        union = gt_area[:, None] + pred_area[None, :] - inter - pred_void[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        iou = np.where(g_cls[:, None] == p_cls[None, :], iou, 0.0)
        gi, pi = np.nonzero(iou > 0.5)
        matched_g = np.zeros(n_g, bool)
        matched_p = np.zeros(n_p, bool)
        matched_g[gi], matched_p[pi] = True, True
        np.add.at(self.tp, g_cls[gi], 1)
        np.add.at(self.iou_sum, g_cls[gi], iou[gi, pi])
        present_g = gt_area > 0
        np.add.at(self.fn, g_cls[~matched_g & present_g], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            void_frac = np.where(pred_area > 0, pred_void / np.maximum(pred_area, 1), 1.0)
        fp_mask = ~matched_p & (pred_area > 0) & (void_frac <= 0.5)
        np.add.at(self.fp, p_cls[fp_mask], 1)

    def scores(self) -> PanopticScores:
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        seen = denom > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            pq = np.where(seen, self.iou_sum / np.where(seen, denom, 1), np.nan)
            sq = np.where(self.tp > 0, self.iou_sum / np.maximum(self.tp, 1), 0.0)
            rq = np.where(seen, self.tp / np.where(seen, denom, 1), np.nan)
        sq = np.where(seen, sq, np.nan)
        nan = float("nan")

        def mean(x: np.ndarray) -> float:
            return float(np.mean(x[seen])) if seen.any() else nan

        return PanopticScores(mean(pq), mean(sq), mean(rq), pq, sq, rq)


def semantic_to_segments(
    label_map: np.ndarray, ignore_index: int | None = 255
) -> tuple[np.ndarray, list[int]]:
    """Turn a semantic map into one segment per present class (stuff-style).

    Returns ``(ids int64 (H, W), classes)``; ignored and unlabeled (-1) pixels get id -1.
    """
    lab = _as_int_map(label_map, "label_map")
    void = lab < 0
    if ignore_index is not None:
        void |= lab == ignore_index
    classes = np.unique(lab[~void]).tolist()
    ids = np.full(lab.shape, -1, np.int64)
    if classes:
        index = np.searchsorted(np.asarray(classes), lab[~void])
        ids[~void] = index
    return ids, [int(c) for c in classes]
