"""Well-conditioned comparisons of two float computations (see CONTRIBUTING.md).

Two implementations of the same formula (ovseg and a reference, a batched and a single call,
one CPU's kernels and another's) agree to a few units in the last place, never bit for bit. A
hard decision downstream (a threshold, an argmax, a sort, a mask ``logits > 0``) turns that
difference into a different answer wherever the value sits within rounding of the cut. So a
test compares decisions only where both computations are clear of the cut by a margin far
above rounding, asserts that this clear set is most of the input (so the test can still
fail), and asserts equality there exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def near_cut(values, cut: float, tol: float):
    """Where ``values`` lies within ``tol`` of ``cut`` (bool, same shape and array type)."""
    if isinstance(values, torch.Tensor):
        return (values.double() - cut).abs() <= tol
    return np.abs(np.asarray(values, np.float64) - cut) <= tol


def top2_gap(scores, axis: int = 0) -> np.ndarray:
    """Gap between the largest and the second largest value along ``axis`` (float64); ``inf``
    with a single entry. An argmax is well-conditioned where this gap is clear of rounding."""
    s = _np(scores).astype(np.float64)
    if s.shape[axis] < 2:
        return np.full(np.delete(s.shape, axis), np.inf)
    part = -np.partition(-s, 1, axis=axis)
    return np.take(part, 0, axis=axis) - np.take(part, 1, axis=axis)


def assert_equal_where(a, b, where, min_fraction: float, what: str = "values") -> None:
    """``a == b`` exactly wherever ``where``, and ``where`` covers at least ``min_fraction`` of
    the entries (so that excluding the ill-conditioned ones does not empty the test)."""
    a, b, where = _np(a), _np(b), _np(where).astype(bool)
    assert a.shape == b.shape == where.shape, (a.shape, b.shape, where.shape)
    frac = float(where.mean()) if where.size else 1.0
    assert frac >= min_fraction, f"only {frac:.1%} of the {what} are well-conditioned"
    bad = np.argwhere(where & (a != b))
    assert len(bad) == 0, f"{len(bad)} well-conditioned {what} differ, first at {bad[0]}"


def assert_labels_are_argmax(labels, *probs, margin: float, min_fraction: float) -> None:
    """``labels`` equal ``probs.argmax(0)`` wherever every given ``(K, ...)`` probability map
    has its top two classes more than ``margin`` apart; elsewhere the label must still be a
    class within ``margin`` of the top in one of the maps (a near-tie may go either way)."""
    labels = _np(labels)
    maps = [_np(p).astype(np.float64) for p in probs]
    clear = np.ones(labels.shape, bool)
    for p in maps:
        clear &= top2_gap(p, 0) > margin
    assert_equal_where(labels, maps[0].argmax(0), clear, min_fraction, "pixel labels")
    near_top = np.zeros(labels.shape, bool)
    idx = np.clip(labels, 0, None)[None].astype(np.int64)
    for p in maps:
        picked = np.take_along_axis(p, idx, 0)[0]
        near_top |= (labels >= 0) & (picked >= p.max(0) - margin)
    assert near_top[~clear].all(), "a near-tie pixel got a label far from the top"


def assert_sorted_by(order, values, tol: float, descending: bool = True) -> None:
    """``order`` (indices) lists ``values`` sorted, up to ties within ``tol``: each entry is
    at least (at most) the next one minus (plus) ``tol``. Two computations of the same values
    may order near-ties differently; anything else out of order fails."""
    v = _np(values).astype(np.float64)[np.asarray(order, np.int64)]
    steps = np.diff(v)
    bad = steps > tol if descending else steps < -tol
    assert not bad.any(), f"out of order beyond {tol}: positions {np.flatnonzero(bad)}"


def midpoint_threshold(values, near: float, min_gap: float) -> float:
    """A threshold between two consecutive sorted ``values``, the gap nearest the quantile
    ``near`` (0..1) that is wider than ``min_gap``: every value is then clear of it by at
    least ``min_gap / 2`` in any implementation that agrees to better than that."""
    v = np.sort(_np(values).astype(np.float64).ravel())
    assert len(v) >= 2, "need two values for a threshold between them"
    gaps = np.diff(v)
    wide = np.flatnonzero(gaps > min_gap)
    assert len(wide), f"no gap wider than {min_gap} between the values"
    i = wide[np.argmin(np.abs(wide + 0.5 - near * (len(v) - 1)))]
    return float((v[i] + v[i + 1]) / 2)
