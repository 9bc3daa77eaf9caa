"""Short reprs: printing a result, a segment or masks shows a summary, not the arrays."""

from __future__ import annotations

import numpy as np

from ovseg.result import Segment, SegmentationResult
from ovseg.structures import Masks


def _result(k: int = 2) -> SegmentationResult:
    mask = np.zeros((300, 400), bool)
    mask[:150] = True
    segment = Segment(1, mask, 0, 0.875, (0, 0, 400, 150), int(mask.sum()), 0.9)
    labels = np.where(mask, 0, -1).astype(np.int32)
    classes = [f"class {i}" for i in range(k)]
    return SegmentationResult(labels, np.ones((300, 400), np.float32), classes, [segment])


def test_result_repr_is_one_short_line():
    text = repr(_result())
    assert text == (
        "SegmentationResult(300x400, classes=['class 0', 'class 1'], 1 segments, 50.0% labelled)"
    )
    assert str(_result()) == text
    many = repr(_result(40))
    assert "(40 in all)" in many and "\n" not in many and len(many) < 200


def test_segment_and_masks_reprs():
    result = _result()
    assert repr(result.segments[0]) == (
        "Segment(id=1, class_index=0, score=0.875, box=(0, 0, 400, 150), area=60000, mask=300x400)"
    )
    masks = Masks.from_masks(np.stack([result.segments[0].mask] * 3), [0.5, 0.75, 0.25])
    assert repr(masks) == "Masks(3 masks of 300x400, scores 0.250..0.750)"
    assert repr(Masks.from_masks(np.zeros((0, 4, 5), bool))) == "Masks(0 masks of 4x5)"
