"""The machinery of :class:`~ovseg.methods.pixelmap.PixelMap`: windows of a bilinear resize,
the sources a map's tiles come from, and the regrouping of rows.

- :func:`bilinear_window`: any window of ``F.interpolate(x, size, mode="bilinear",
  align_corners=False)`` from the source pixels it needs (torch's source coordinates, its
  order of operations: along the width, then the height);
- sources, each giving a window ``(rows, h, w)`` of its values and an estimate of the bytes a
  ``side x side`` window costs: :class:`TensorSource` (a full tensor), :class:`LogitsSource`
  (low-resolution logits -> resize -> PAMR with its halo -> softmax), :class:`MapSource` and
  :class:`ResizeSource` (another map, as is or resized);
- :func:`group_rows`: row ``j`` = max over a group of rows (a class over its queries, a
  background row over the background names);
- :func:`same_where_valid`, :func:`zero_where_invalid`: a remembered prediction's checks,
  in row blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ovseg.methods.pamr import pamr_affinity, pamr_halo, pamr_propagate

__all__ = [
    "LogitsSource",
    "MapSource",
    "ResizeSource",
    "TensorSource",
    "bilinear_window",
    "check_query_class",
    "group_rows",
    "row_plan",
    "source_span",
]

_F32 = 4
_STRIPS = 16  # PAMR's weights of a grown tile are computed in this many strips of rows


def check_query_class(query_class: Sequence[int], num_queries: int, num_classes: int) -> list:
    """``query_class`` as a list of ``num_queries`` ints in ``[0, num_classes)``.

    Raises:
        ValueError: a count or an entry out of range (naming it).
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    qc = list(query_class)
    if len(qc) != num_queries:
        raise ValueError(
            f"query_class must have one entry per query ({num_queries}), got {len(qc)}"
        )
    for k in qc:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < num_classes:
            raise ValueError(f"query_class entries must be ints in [0, {num_classes}), got {k!r}")
    return [int(k) for k in qc]


def _area(size: tuple[int, int], side: int) -> int:
    """Pixels of the largest tile of at most ``side x side`` in a map of ``size``."""
    return min(side, size[0]) * min(side, size[1])


def axis_weights(n_in: int, n_out: int, start: int, stop: int):
    """torch's bilinear (``align_corners=False``) source rows of outputs ``start .. stop - 1``:
    ``(i0, i1, w0, w1)``, the two source indices and their float32 weights."""
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(start, stop, dtype=np.float64)
    # one rounding of scale * (dst + 0.5) - 0.5, as torch's fused multiply-add gives
    src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (np.float32(1) - w1).astype(np.float32), w1


def source_span(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, int]:
    i0, i1, _, _ = axis_weights(n_in, n_out, start, stop)
    return int(i0.min()), int(i1.max()) + 1


def bilinear_window(
    source: torch.Tensor,
    size: tuple[int, int],
    rows: tuple[int, int],
    cols: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
    in_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Rows ``rows`` and columns ``cols`` (``(start, stop)``) of ``F.interpolate(source,
    size, mode="bilinear", align_corners=False)``, without the whole output.

    Args:
        source: ``(C, h, w)`` float tensor, or the part of it starting at ``offset`` that
            covers the window's source pixels (see :func:`source_span`).
        size: ``(H, W)`` of the whole resized output.
        in_size: ``(h, w)`` of the whole source (default: ``source``'s own shape).

    Returns:
        ``(C, rows[1] - rows[0], cols[1] - cols[0])`` float32, on ``source``'s device.
    """
    h, w = in_size if in_size is not None else tuple(source.shape[-2:])
    i0, i1, a0, a1 = axis_weights(h, size[0], *rows)
    j0, j1, b0, b1 = axis_weights(w, size[1], *cols)
    dev = source.device
    oy, ox = offset
    r_lo = int(i0.min())
    src = source[:, r_lo - oy : int(i1.max()) + 1 - oy]
    j0t = torch.from_numpy(j0 - ox).to(dev)
    j1t = torch.from_numpy(j1 - ox).to(dev)
    b0t, b1t = torch.from_numpy(b0).to(dev), torch.from_numpy(b1).to(dev)
    # along the width first, then the height: torch's order
    across = src.index_select(2, j1t).mul_(b1t).addcmul_(src.index_select(2, j0t), b0t)
    i0t = torch.from_numpy(i0 - r_lo).to(dev)
    i1t = torch.from_numpy(i1 - r_lo).to(dev)
    a0t, a1t = torch.from_numpy(a0).to(dev)[:, None], torch.from_numpy(a1).to(dev)[:, None]
    return across.index_select(1, i1t).mul_(a1t).addcmul_(across.index_select(1, i0t), a0t)


# ----------------------------------------------------------------------------- sources
class TensorSource:
    """Rows of a full ``(C, H, W)`` tensor."""

    def __init__(self, probs: torch.Tensor):
        self.probs = probs
        self.rows = probs.shape[0]
        self.size = tuple(probs.shape[1:])
        self.device = probs.device

    def window(self, r0, r1, c0, c1) -> torch.Tensor:
        return self.probs[:, r0:r1, c0:c1].float().clone()

    def work(self, side: int) -> int:
        return self.rows * _area(self.size, side) * _F32


class LogitsSource:
    """``softmax(scale * logits)`` over queries of low-resolution logits resized bilinearly
    (and refined by PAMR) to the output size."""

    def __init__(self, logits, size, scale, guide, steps, dilations):
        self.logits = logits
        self.rows = logits.shape[0]
        self.size = size
        self.scale = scale
        self.guide, self.steps, self.dilations = guide, steps, dilations
        self.halo = pamr_halo(steps, dilations) if steps else 0
        self.device = logits.device

    def _chunk(self) -> int:
        return max(1, min(self.rows, 2))

    def work(self, side: int) -> int:
        out = 2 * self.rows * _area(self.size, side) * _F32  # the tile, and its softmax
        if not self.steps:
            return out
        h, w = self.size
        pad = 2 * max(self.dilations)
        eh = min(side + 2 * self.halo, h) + pad
        ew = min(side + 2 * self.halo, w) + pad
        weights = 8 * len(self.dilations) * eh * ew * _F32
        strip = 64 * (eh * ew // _STRIPS + pad * ew) * _F32
        refine = (3 * self._chunk() + 3) * eh * ew * _F32  # mask, sum, padded; the guide
        return out + weights + strip + refine

    def window(self, r0, r1, c0, c1) -> torch.Tensor:
        h, w = self.size
        if not self.steps:
            out = bilinear_window(self.logits, self.size, (r0, r1), (c0, c1))
        else:
            e0, e1 = max(0, r0 - self.halo), min(h, r1 + self.halo)
            f0, f1 = max(0, c0 - self.halo), min(w, c1 + self.halo)
            guide = bilinear_window(self.guide, self.size, (e0, e1), (f0, f1))
            strip = max(1, (e1 - e0) * (f1 - f0) // _STRIPS)
            affinity = pamr_affinity(guide[None], self.dilations, strip)
            del guide
            out = self.logits.new_empty((self.rows, r1 - r0, c1 - c0))
            step = self._chunk()
            for q in range(0, self.rows, step):
                grown = bilinear_window(self.logits[q : q + step], self.size, (e0, e1), (f0, f1))
                refined = pamr_propagate(affinity, grown[None], self.steps, self.dilations)
                out[q : q + step] = refined[0, :, r0 - e0 : r1 - e0, c0 - f0 : c1 - f0]
        return torch.softmax(out.mul_(self.scale), dim=0)


class MapSource:
    """The rows of another map (for a regrouping of its rows)."""

    def __init__(self, parent):
        self.parent = parent
        self.rows = parent.num_classes
        self.size = parent.size
        self.device = parent.device

    def window(self, r0, r1, c0, c1) -> torch.Tensor:
        return self.parent.tile((r0, r1), (c0, c1))

    def work(self, side: int) -> int:
        return self.parent.work(side)


class ResizeSource:
    """Another map resized bilinearly (``align_corners=False``) to ``size``."""

    def __init__(self, parent, size: tuple[int, int]):
        self.parent = parent
        self.rows = parent.num_classes
        self.size = size
        self.device = parent.device

    def window(self, r0, r1, c0, c1) -> torch.Tensor:
        ph, pw = self.parent.size
        rs = source_span(ph, self.size[0], r0, r1)
        cs = source_span(pw, self.size[1], c0, c1)
        src = self.parent.tile(rs, cs)
        return bilinear_window(src, self.size, (r0, r1), (c0, c1), (rs[0], cs[0]), (ph, pw))

    def work(self, side: int) -> int:
        ph, pw = self.parent.size
        ratio = max(ph / self.size[0], pw / self.size[1], 1.0)
        src = math.ceil(side * ratio) + 2
        return self.parent.work(src) + 3 * self.rows * _area(self.size, side) * ratio * _F32


def group_rows(base: torch.Tensor, plan) -> torch.Tensor:
    """Row ``j`` of the result: the max over ``base``'s rows of group ``j`` (0 when empty),
    with ``plan`` from :func:`row_plan` (None: ``base`` itself)."""
    if plan is None:
        return base
    rows, single_rows, single_members, multi = plan
    dev = base.device
    if len(single_rows) == rows:
        return base.index_select(0, single_members.to(dev))
    out = base.new_zeros((rows, *base.shape[1:]))
    if len(single_rows):
        out.index_copy_(0, single_rows.to(dev), base.index_select(0, single_members.to(dev)))
    for j, members in multi:
        torch.amax(base.index_select(0, members.to(dev)), dim=0, out=out[j])
    return out


def row_plan(groups: list[list[int]]):
    """Index plan of a row grouping for :func:`group_rows`: ``(rows, single_rows,
    single_members, multi)``: the number of groups, the groups of one member and those
    members, and ``(j, members)`` of each group of several."""
    singles = [(j, g[0]) for j, g in enumerate(groups) if len(g) == 1]
    multi = [(j, torch.tensor(g, dtype=torch.int64)) for j, g in enumerate(groups) if len(g) > 1]
    single_rows = torch.tensor([j for j, _ in singles], dtype=torch.int64)
    single_members = torch.tensor([i for _, i in singles], dtype=torch.int64)
    return len(groups), single_rows, single_members, multi


def check_groups(groups, num_rows: int) -> list[list[int]]:
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise TypeError("groups must be a non-empty list of lists of row indices")
    out = []
    for g in groups:
        if isinstance(g, (str, bytes)) or not isinstance(g, Sequence):
            raise TypeError(f"each group must be a list of row indices, got {g!r}")
        for i in g:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < num_rows:
                raise ValueError(f"row indices must be ints in [0, {num_rows}), got {i!r}")
        out.append([int(i) for i in g])
    return out


def check_span(value, n: int, what: str) -> tuple[int, int]:
    if isinstance(value, slice):
        if value.step not in (None, 1):
            raise ValueError(f"{what} must be a contiguous slice, got step {value.step}")
        start, stop, _ = value.indices(n)
    else:
        try:
            start, stop = (int(v) for v in value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what} must be a slice or a (start, stop) pair, got {value!r}") from e
    if not 0 <= start < stop <= n:
        raise ValueError(f"{what} ({start}, {stop}) must satisfy 0 <= start < stop <= {n}")
    return start, stop


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def check_real(value, name: str, low: float, high: float, open_low: bool = False) -> float:
    """A finite real in ``[low, high]`` (``(low, high]`` with ``open_low``), else ValueError."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        span = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")
    return float(value)


def check_size(size) -> tuple[int, int]:
    try:
        h, w = size
    except (TypeError, ValueError) as e:
        raise TypeError(f"size must be (H, W), got {size!r}") from e
    return positive_int(h, "H"), positive_int(w, "W")


def check_logits_args(logits, size, logit_scale, query_class, num_classes, guide, pamr_steps,
                      pamr_dilations):  # fmt: skip
    """The arguments of :meth:`~ovseg.methods.pixelmap.PixelMap.from_logits`, checked:
    ``(logits (Q, h, w), size, groups (one list of query rows per class, or None), guide
    (3, hg, wg) float32 or None, dilations)``."""
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (3, 4):
        raise TypeError("logits must be a (Q, h, w) tensor")
    if logits.ndim == 4:
        if logits.shape[0] != 1:
            raise ValueError(f"logits must be (Q, h, w) or (1, Q, h, w), got {logits.shape}")
        logits = logits[0]
    if min(logits.shape) < 1 or not logits.is_floating_point():
        raise TypeError(f"logits must be a non-empty float tensor, got {logits.dtype}")
    size = check_size(size)
    check_real(logit_scale, "logit_scale", 0.0, math.inf, open_low=True)
    q = logits.shape[0]
    groups = None
    if query_class is not None:
        qc = check_query_class(query_class, q, num_classes)
        groups = [[i for i, k in enumerate(qc) if k == c] for c in range(int(num_classes))]
    elif num_classes is not None:
        raise ValueError("num_classes needs query_class")
    if pamr_steps != 0:
        positive_int(pamr_steps, "pamr_steps (or 0)")
    dilations = tuple(positive_int(d, "pamr_dilations entries") for d in pamr_dilations)
    if not dilations:
        raise ValueError("pamr_dilations must not be empty")
    if pamr_steps:
        if not isinstance(guide, torch.Tensor) or guide.ndim not in (3, 4):
            raise TypeError("PAMR needs a guide image tensor (3, h, w)")
        guide = guide[0] if guide.ndim == 4 else guide
        if guide.shape[0] != 3 or min(guide.shape) < 1:
            raise ValueError(f"guide must be (3, h, w), got {tuple(guide.shape)}")
        guide = guide.to(device=logits.device, dtype=torch.float32)
    return logits, size, groups, guide, dilations


def check_predict_args(c, prob_threshold, area_threshold, background_class) -> None:
    """The thresholds and background row of :meth:`~ovseg.methods.pixelmap.PixelMap.predict`,
    checked for ``c`` rows."""
    check_real(prob_threshold, "prob_threshold", 0.0, 1.0)
    if area_threshold is not None:
        check_real(area_threshold, "area_threshold", 0.0, 1.0)
    if background_class is None:
        if prob_threshold > 0 or area_threshold is not None:
            raise ValueError("background_class is None but a probability or area threshold is set")
    elif (
        isinstance(background_class, bool)
        or not isinstance(background_class, (int, np.integer))
        or not 0 <= background_class < c
    ):
        raise ValueError(
            f"background_class must be None or an int in [0, {c}), got {background_class!r}"
        )


# ----------------------------------------------------------------------------- predictions
_ROWS = 512  # rows per block of the full-size comparisons below (bounded temporaries)


def same_where_valid(labels: np.ndarray, known: np.ndarray, c: int) -> bool:
    """Whether ``labels`` equals ``known`` wherever it is in ``[0, c)``, row block by block."""
    for r in range(0, labels.shape[0], _ROWS):
        lab, ref = labels[r : r + _ROWS], known[r : r + _ROWS]
        valid = (lab >= 0) & (lab < c)
        if not np.array_equal(lab[valid], ref[valid]):
            return False
    return True


def zero_where_invalid(values: np.ndarray, labels: np.ndarray, c: int) -> None:
    """Set ``values`` to 0 (in place) where ``labels`` is outside ``[0, c)``."""
    for r in range(0, labels.shape[0], _ROWS):
        lab = labels[r : r + _ROWS]
        values[r : r + _ROWS][(lab < 0) | (lab >= c)] = 0.0
