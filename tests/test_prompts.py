import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovseg.proposals.prompts import make_prompt, sample_points

SHAPE = (40, 60)


def test_points_default_to_positive_labels():
    p = make_prompt(SHAPE, points=[[1, 2], [3, 4]])
    assert p.points.shape == (2, 2) and p.point_labels.tolist() == [1, 1]
    assert not p.is_empty


def test_single_point_and_box_are_promoted_to_2d():
    p = make_prompt(SHAPE, points=[5, 6], boxes=[0, 0, 10, 10])
    assert p.points.shape == (1, 2) and p.boxes.shape == (1, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(points=[[60, 5]]), "outside"),
        (dict(points=[[-1, 5]]), "outside"),
        (dict(points=[[5, 40]]), "outside"),
        (dict(points=[[1, 2, 3]]), "shape"),
        (dict(points=[[np.nan, 2]]), "finite"),
        (dict(points=[[1, 2]], point_labels=[1, 0]), "2 entries for 1"),
        (dict(points=[[1, 2]], point_labels=[2]), "1 \\(positive\\) or 0"),
        (dict(points=[[1, 2]], point_labels=[0]), "positive point"),
        (dict(point_labels=[1]), "without points"),
        (dict(boxes=[[10, 10, 5, 20]]), "inverted"),
        (dict(boxes=[[10, 10, 10, 20]]), "inverted"),
        (dict(boxes=[[0, 0, 61, 20]]), "outside"),
        (dict(boxes=[[0, 0, 5, 5], [1, 1, 6, 6]], points=[[2, 2]]), "single box"),
        (dict(mask=np.zeros(SHAPE, bool)), "empty"),
        (dict(mask=np.ones((10, 10), bool)), "shape"),
        (dict(scribble=np.ones((40, 61), bool)), "shape"),
    ],
)
def test_bad_prompts_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_prompt(SHAPE, **kwargs)


def test_non_numeric_points_raise_type_error():
    with pytest.raises(TypeError, match="points"):
        make_prompt(SHAPE, points=[["a", "b"]])


def test_rough_mask_alone_yields_points_inside_it():
    mask = np.zeros(SHAPE, bool)
    mask[10:20, 30:50] = True
    pts, labels = make_prompt(SHAPE, mask=mask).all_points()
    assert len(pts) == 3 and (labels == 1).all()
    assert mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()


def test_scribble_points_join_given_points():
    scribble = np.zeros(SHAPE, bool)
    scribble[5, 5:55] = True
    p = make_prompt(SHAPE, points=[[1, 1]], point_labels=[0], scribble=scribble)
    pts, labels = p.all_points()
    assert labels[0] == 0 and (labels[1:] == 1).all() and len(pts) == 1 + 8
    assert (pts[1:, 1] == 5.5).all()


@given(
    st.lists(st.tuples(st.integers(0, 39), st.integers(0, 59)), min_size=1, max_size=50),
    st.integers(1, 10),
)
def test_sample_points_lie_in_mask_and_are_distinct(pixels, k):
    mask = np.zeros(SHAPE, bool)
    for y, x in pixels:
        mask[y, x] = True
    pts = sample_points(mask, k)
    assert 1 <= len(pts) <= min(k, mask.sum())
    assert mask[(pts[:, 1] - 0.5).astype(int), (pts[:, 0] - 0.5).astype(int)].all()
    assert len({tuple(p) for p in pts.tolist()}) == len(pts)
