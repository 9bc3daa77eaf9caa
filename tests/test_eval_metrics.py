"""Metrics: hand-computed cases and a naive per-pixel reference on random maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ovseg.eval.metrics import ConfusionMatrix, PanopticQuality, semantic_to_segments


def test_hand_computed_two_classes():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, -1, 1, 0]])
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    # class 0: 4 gt pixels, predicted 0 at 2, 1 at 1, unlabeled at 1 -> TP 2
    # class 1: 3 gt pixels, all predicted 1 -> TP 3; predicted-1 pixels = 4
    assert cm.matrix.tolist() == [[2, 1, 1], [0, 3, 0]]
    s = cm.scores()
    assert s["iou"][0] == pytest.approx(2 / 4)  # union = 4 gt + 2 pred - 2
    assert s["iou"][1] == pytest.approx(3 / 4)  # union = 3 + 4 - 3
    assert s["miou"] == pytest.approx(0.625)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    assert s["mean_accuracy"] == pytest.approx((2 / 4 + 3 / 3) / 2)
    assert s["fwiou"] == pytest.approx(4 / 7 * 0.5 + 3 / 7 * 0.75)


def test_absent_class_is_nan_and_excluded():
    gt = np.zeros((2, 2), int)
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((2, 2), int), gt)
    s = cm.scores()
    assert s["iou"][0] == 1.0 and math.isnan(s["iou"][1]) and math.isnan(s["iou"][2])
    assert s["miou"] == 1.0
    # a class predicted but absent from the ground truth has IoU 0 and counts
    cm.update(np.full((2, 2), 2), gt)
    assert cm.scores()["iou"][2] == 0.0
    assert cm.scores()["miou"] == pytest.approx(0.25)


def test_unlabeled_prediction_counts_as_miss():
    gt = np.ones((3, 3), int)
    cm = ConfusionMatrix(2)
    cm.update(np.full((3, 3), -1), gt)
    s = cm.scores()
    assert s["iou"][1] == 0.0 and s["pixel_accuracy"] == 0.0
    assert cm.matrix[1, 2] == 9


def test_streaming_equals_batch_and_merge():
    rng = np.random.default_rng(0)
    maps = [(rng.integers(-1, 4, (5, 7)), rng.integers(0, 4, (5, 7))) for _ in range(3)]
    a, b, c = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    for p, g in maps:
        a.update(p, g)
    b.update(np.concatenate([p for p, _ in maps]), np.concatenate([g for _, g in maps]))
    c.update(*maps[0])
    rest = ConfusionMatrix(4)
    for p, g in maps[1:]:
        rest.update(p, g)
    c.merge(rest)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.matrix, c.matrix)


@pytest.mark.parametrize(
    ("pred", "gt", "err"),
    [
        (np.zeros((2, 2), int), np.zeros((2, 3), int), ValueError),
        (np.zeros((2, 2), int), np.full((2, 2), 7), ValueError),
        (np.full((2, 2), 5), np.zeros((2, 2), int), ValueError),
        (np.full((2, 2), -2), np.zeros((2, 2), int), ValueError),
        (np.zeros((2, 2), float), np.zeros((2, 2), int), TypeError),
        (np.zeros((2, 2, 1), int), np.zeros((2, 2), int), ValueError),
    ],
)
def test_bad_input(pred, gt, err):
    with pytest.raises(err):
        ConfusionMatrix(3).update(pred, gt)


def test_bad_construction():
    with pytest.raises(ValueError):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(300, ignore_index=255)


def _naive(pred: np.ndarray, gt: np.ndarray, k: int, ignore: int) -> dict:
    iou, acc, freq = [], [], []
    valid = gt != ignore
    n = int(valid.sum())
    for c in range(k):
        t = valid & (gt == c)
        p = valid & (pred == c)
        inter, union = int((t & p).sum()), int((t | p).sum())
        iou.append(inter / union if union else float("nan"))
        acc.append(inter / t.sum() if t.sum() else float("nan"))
        freq.append(t.sum() / n if n else 0.0)
    ious = [x for x in iou if not math.isnan(x)]
    correct = int((valid & (pred == gt)).sum())
    return {
        "iou": iou,
        "miou": sum(ious) / len(ious) if ious else float("nan"),
        "pixel_accuracy": correct / n if n else float("nan"),
        "fwiou": sum(f * i for f, i in zip(freq, iou, strict=True) if f > 0) if n else float("nan"),
        "mean_accuracy": float(np.nanmean(acc)) if not all(map(math.isnan, acc)) else math.nan,
    }


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    data=st.data(),
)
def test_matches_naive_reference(k, data):
    shape = (data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9)))
    gt = data.draw(arrays(np.int64, shape, elements=st.sampled_from([*range(k), 255])))
    pred = data.draw(arrays(np.int64, shape, elements=st.integers(-1, k - 1)))
    cm = ConfusionMatrix(k)
    cm.update(pred, gt)
    got, ref = cm.scores(), _naive(pred, gt, k, 255)
    np.testing.assert_allclose(got["iou"], ref["iou"], equal_nan=True)
    for key in ("miou", "pixel_accuracy", "fwiou", "mean_accuracy"):
        assert got[key] == pytest.approx(ref[key], nan_ok=True), key
    assert cm.total == int((gt != 255).sum())


def test_panoptic_hand_computed():
    gt_ids = np.full((4, 8), -1)
    gt_ids[:, :4] = 0  # class 0, 16 px
    gt_ids[:, 4:] = 1  # class 1, 16 px
    pred_ids = np.full((4, 8), -1)
    pred_ids[:, :3] = 0  # class 0, IoU 12/16 -> TP
    pred_ids[:, 3:6] = 1  # class 1, IoU 8/20 -> no match -> FP, gt 1 -> FN
    pq = PanopticQuality(2)
    pq.update(pred_ids, [0, 1], gt_ids, [0, 1])
    s = pq.scores()
    assert s.per_class_pq[0] == pytest.approx(0.75)
    assert s.per_class_sq[0] == pytest.approx(0.75) and s.per_class_rq[0] == 1.0
    assert s.per_class_pq[1] == 0.0 and s.per_class_rq[1] == 0.0
    assert s.pq == pytest.approx(0.375)
    assert s.rq == pytest.approx(0.5)


def test_panoptic_void_and_wrong_class():
    gt_ids = np.full((4, 4), -1)
    gt_ids[:2] = 0
    pred_ids = np.full((4, 4), -1)
    pred_ids[2:] = 0  # entirely on void: neither FP nor TP
    pq = PanopticQuality(3)
    pq.update(pred_ids, [2], gt_ids, [1])
    assert pq.fp.sum() == 0 and pq.fn[1] == 1 and pq.tp.sum() == 0
    # same mask, other class: no match
    pq2 = PanopticQuality(3)
    pq2.update(gt_ids, [2], gt_ids, [1])
    assert pq2.tp.sum() == 0 and pq2.fp[2] == 1 and pq2.fn[1] == 1
    # perfect
    pq3 = PanopticQuality(3)
    pq3.update(gt_ids, [1], gt_ids, [1])
    assert pq3.scores().pq == 1.0 and math.isnan(pq3.scores().per_class_pq[0])


def test_panoptic_bad_input():
    with pytest.raises(ValueError):
        PanopticQuality(2).update(np.zeros((2, 2), int), [0], np.zeros((2, 2), int), [5])
    with pytest.raises(ValueError):
        PanopticQuality(2).update(np.ones((2, 2), int), [0], np.zeros((2, 2), int), [0])


def test_semantic_to_segments():
    lab = np.array([[3, 3, 255], [-1, 1, 1]])
    ids, classes = semantic_to_segments(lab)
    assert classes == [1, 3]
    assert ids.tolist() == [[1, 1, -1], [-1, 0, 0]]
