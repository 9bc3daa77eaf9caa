"""The helpers of well-conditioned comparisons (tests/conditioning.py) accept what they should
and refuse what they should: a helper that could not fail would hide the bugs it is for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conditioning import (
    assert_equal_where,
    assert_labels_are_argmax,
    assert_sorted_by,
    midpoint_threshold,
    near_cut,
    top2_gap,
)


def test_near_cut_and_top2_gap():
    v = np.array([0.0, 1e-6, -2e-5, 0.5])
    assert near_cut(v, 0.0, 1e-5).tolist() == [True, True, False, False]
    assert near_cut(torch.tensor(v), 0.5, 1e-5).tolist() == [False, False, False, True]
    scores = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(top2_gap(scores, axis=1), [0.5, 0.0])
    assert top2_gap(np.ones((1, 3)), axis=0).tolist() == [np.inf] * 3


def test_assert_equal_where():
    a, b = np.array([1, 2, 3, 4]), np.array([1, 2, 9, 4])
    assert_equal_where(a, b, [True, True, False, True], 0.75)
    with pytest.raises(AssertionError, match="differ"):
        assert_equal_where(a, b, [True, True, True, True], 0.5)
    with pytest.raises(AssertionError, match="well-conditioned"):
        assert_equal_where(a, b, [True, False, False, False], 0.5)


def test_labels_are_argmax_up_to_near_ties():
    probs = np.array([[[0.6, 0.5, 0.2]], [[0.4, 0.5 + 1e-9, 0.8]]])  # (K=2, 1, 3)
    assert_labels_are_argmax(np.array([[0, 0, 1]]), probs, margin=1e-6, min_fraction=0.5)
    assert_labels_are_argmax(np.array([[0, 1, 1]]), probs, margin=1e-6, min_fraction=0.5)
    with pytest.raises(AssertionError, match="differ"):
        assert_labels_are_argmax(np.array([[1, 1, 1]]), probs, margin=1e-6, min_fraction=0.5)
    far = np.array([[[0.9, 0.5, 0.2]], [[0.1, 0.5, 0.8]], [[0.0, 0.0, 0.0]]])
    with pytest.raises(AssertionError, match="far from the top"):
        assert_labels_are_argmax(np.array([[0, 2, 1]]), far, margin=1e-6, min_fraction=0.5)


def test_sorted_by_allows_only_near_ties():
    values = np.array([0.3, 0.5, 0.5 + 1e-9, 0.1])
    assert_sorted_by([2, 1, 0, 3], values, 1e-6)
    assert_sorted_by([1, 2, 0, 3], values, 1e-6)
    with pytest.raises(AssertionError, match="out of order"):
        assert_sorted_by([0, 1, 2, 3], values, 1e-6)
    assert_sorted_by([3, 0, 1], values, 1e-6, descending=False)


def test_midpoint_threshold_sits_in_a_wide_gap():
    values = [0.1, 0.2, 0.20001, 0.4, 0.9]
    t = midpoint_threshold(values, 0.5, min_gap=1e-3)  # not between 0.2 and 0.20001
    assert t == pytest.approx(0.300005)
    assert midpoint_threshold(values, 0.0, min_gap=1e-3) == pytest.approx(0.15)
    with pytest.raises(AssertionError, match="no gap"):
        midpoint_threshold([0.1, 0.1 + 1e-6], 0.5, min_gap=1e-3)
