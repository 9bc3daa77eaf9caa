"""Fusion rules on hand-made masks and scores."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovseg.fusion import fuse
from ovseg.result import UNLABELED

CLASSES = ["road", "car", "sky"]


def _masks(*rects, shape=(6, 8)):
    out = np.zeros((len(rects), *shape), bool)
    for i, (y0, y1, x0, x1) in enumerate(rects):
        out[i, y0:y1, x0:x1] = True
    return out


def test_highest_scoring_mask_wins_overlap_and_uncovered_is_unlabeled():
    masks = _masks((0, 4, 0, 8), (2, 6, 2, 6))
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.9, 0.0]], np.float32)
    r = fuse(masks, scores, CLASSES)
    assert (r.label_map[2:4, 2:6] == 1).all()  # car (0.9) beats road (0.7)
    assert (r.label_map[0:2] == 0).all()
    assert (r.label_map[4:6, 0:2] == UNLABELED).all()
    assert r.confidence[3, 3] == pytest.approx(0.9) and r.confidence[0, 0] == pytest.approx(0.7)
    assert r.confidence[5, 0] == 0.0
    assert r.label_map.dtype == np.int32 and r.confidence.dtype == np.float32
    assert [s.class_index for s in r.segments] == [1, 0]
    car, road = r.segments
    assert car.area == 16 and road.area == 32 - 8
    assert not (car.mask & road.mask).any()
    assert car.box == (2, 2, 6, 6)
    assert (r.segment_map[car.mask] == 0).all() and (r.segment_map[road.mask] == 1).all()


def test_threshold_drops_weak_masks():
    masks = _masks((0, 6, 0, 4), (0, 6, 4, 8))
    scores = np.array([[0.4, 0.3, 0.3], [0.1, 0.1, 0.8]], np.float32)
    r = fuse(masks, scores, CLASSES, score_threshold=0.5)
    assert (r.label_map[:, :4] == UNLABELED).all() and (r.label_map[:, 4:] == 2).all()
    assert len(r.segments) == 1


def test_equal_scores_prefer_the_smaller_mask():
    masks = _masks((0, 6, 0, 8), (1, 3, 1, 3))
    scores = np.array([[0.6, 0.4, 0.0], [0.0, 0.6, 0.4]], np.float32)
    r = fuse(masks, scores, CLASSES)
    assert (r.label_map[1:3, 1:3] == 1).all() and r.label_map[0, 0] == 0


def test_zero_score_masks_label_nothing_and_fully_hidden_masks_vanish():
    masks = _masks((0, 6, 0, 8), (0, 2, 0, 2), (0, 2, 0, 8))
    scores = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]], np.float32)
    r = fuse(masks, scores, CLASSES)
    assert (r.label_map[2:] == UNLABELED).all()
    assert len(r.segments) == 1 and r.segments[0].class_index == 2  # mask 1 is fully covered


def test_no_masks_gives_all_unlabeled():
    r = fuse(np.zeros((0, 4, 5), bool), np.zeros((0, 3), np.float32), CLASSES)
    assert (r.label_map == UNLABELED).all() and r.segments == []


@pytest.mark.parametrize(
    "masks, scores, kw, match",
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 3)), {}, "bool"),
        (np.zeros((2, 4, 4), bool), np.zeros((2, 2)), {}, "scores must be"),
        (np.zeros((1, 4, 4), bool), np.full((1, 3), 1.5), {}, "probabilities"),
        (np.zeros((1, 4, 4), bool), np.zeros((1, 3)), {"score_threshold": 2.0}, "threshold"),
    ],
)
def test_bad_fusion_input(masks, scores, kw, match):
    with pytest.raises(ValueError, match=match):
        fuse(masks, scores, CLASSES, **kw)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_fusion_matches_per_pixel_reference(n, seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((n, 7, 9)) < 0.4
    scores = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    r = fuse(masks, scores, CLASSES, score_threshold=0.4)
    best, top = scores.argmax(1), scores.max(1)
    area = masks.reshape(n, -1).sum(1)
    for y in range(7):
        for x in range(9):
            cands = [i for i in range(n) if masks[i, y, x] and top[i] >= 0.4]
            if not cands:
                assert r.label_map[y, x] == UNLABELED and r.confidence[y, x] == 0
                continue
            win = max(cands, key=lambda i: (top[i], -area[i]))
            assert r.label_map[y, x] == best[win]
            assert r.confidence[y, x] == pytest.approx(top[win])
    owned = np.zeros((7, 9), int)
    for s in r.segments:
        owned += s.mask
        assert (r.label_map[s.mask] == s.class_index).all()
    assert ((owned == 1) == (r.label_map != UNLABELED)).all()
