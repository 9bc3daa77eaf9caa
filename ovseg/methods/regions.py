"""Region id maps for the methods that use SAM regions (CorrCLIP): painting, merging, voting.

A region id map is an int ``(H, W)`` array: ``0`` is the unsegmented pixels, each other value
one region. :func:`region_id_map` builds it from bool masks as CorrCLIP paints SAM 2's masks
(sorted by area ascending, ids ``1..N``, so a larger mask overwrites a smaller one where they
overlap) or checks a map given by the caller.

CorrCLIP's code treats the *smallest* id present as the unsegmented region, whether or not it
is 0 (in each window, and in the final vote); the functions here keep that rule, so a map with
no 0 (regions covering every pixel) gives the same numbers as CorrCLIP's code.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DBSCAN_EPS",
    "merge_regions",
    "rank_ids",
    "region_id_map",
    "region_vote",
    "resize_ids",
    "scope_mask",
]

DBSCAN_EPS = 0.2
"""CorrCLIP's DBSCAN radius on ``max(sim) - sim`` of region features (``min_samples`` 1)."""


def region_id_map(masks: object, shape: tuple[int, int]) -> np.ndarray:
    """Regions as an int64 id map ``(H, W)`` with 0 = unsegmented.

    Args:
        masks: bool ``(N, H, W)`` (``N`` may be 0), painted in order of area ascending (stable:
            equal areas keep their order) with ids ``1..N``; or an integer ``(H, W)`` map with
            values ``>= 0``, returned as is (as int64).
        shape: the image's ``(H, W)``.

    Raises:
        TypeError: not a numpy array / tensor of bool or integer dtype.
        ValueError: wrong number of dimensions, a size other than the image's, negative ids.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    if not isinstance(masks, np.ndarray):
        raise TypeError(
            f"masks must be a bool (N, H, W) or integer (H, W) numpy array, got {type(masks)}"
        )
    h, w = int(shape[0]), int(shape[1])
    if masks.dtype == bool:
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"bool masks must be (N, {h}, {w}), got {masks.shape}")
        ids = np.zeros((h, w), np.int64)
        areas = masks.reshape(masks.shape[0], h * w).sum(1)
        for new_id, i in enumerate(np.argsort(areas, kind="stable"), start=1):
            ids[masks[i]] = new_id
        return ids
    if not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(
            f"masks must be bool (N, H, W) or an integer (H, W) id map, got dtype {masks.dtype}"
        )
    if masks.shape != (h, w):
        raise ValueError(f"an id map must be (H, W) = ({h}, {w}), got {masks.shape}")
    if masks.size and masks.min() < 0:
        raise ValueError(f"id map values must be >= 0 (0 = unsegmented), got {masks.min()}")
    return masks.astype(np.int64)


def rank_ids(ids: np.ndarray) -> np.ndarray:
    """The ids replaced by their rank among the values present (0, 1, ...), int64: the same
    order, so the same regions and the same smallest id."""
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(ids.shape).astype(np.int64)


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An id map ``(h, w)`` resized to ``size`` by ``F.interpolate(mode="nearest")`` (source
    index ``floor(dst * in / out)``) on float32, as CorrCLIP resizes its masks; int64 out.
    Exact for ids below 2**24."""
    out = F.interpolate(ids[None, None].float(), size=tuple(size), mode="nearest")
    return out[0, 0].to(torch.int64)


def merge_regions(
    ids: torch.Tensor, feats: torch.Tensor, eps: float | None = DBSCAN_EPS
) -> torch.Tensor:
    """CorrCLIP's region merging on one window: group index per grid cell, 0 = unsegmented.

    Args:
        ids: int ``(gh, gw)`` region ids on the feature grid.
        feats: ``(gh * gw, C)`` unit-norm features (row-major).
        eps: DBSCAN radius; ``None``: no merging (CorrCLIPv2, whose code comments the
            merging out), each region its own group.

    Returns:
        int64 ``(gh, gw)``. Regions are the values present, the smallest one the unsegmented
        region (group 0). With more than two values, the other regions' mean features
        (L2-normalised) are clustered by DBSCAN (``min_samples`` 1, precomputed distance
        ``max(sim) - sim`` over their cosine matrix) and each cluster ``c`` becomes group
        ``c + 1``; otherwise each region is its own group.
    """
    from sklearn.cluster import DBSCAN

    values, inverse = torch.unique(ids, return_inverse=True)
    group = torch.arange(len(values), device=ids.device)
    if eps is not None and len(values) > 2:
        flat = inverse.reshape(-1)
        means = torch.stack([feats[flat == r].mean(dim=0) for r in range(len(values))])
        means = F.normalize(means, dim=1)[1:]
        sim = means @ means.T
        dist = (sim.max() - sim).detach().cpu().numpy()
        cluster = DBSCAN(metric="precomputed", eps=eps, min_samples=1).fit_predict(dist)
        group[1:] = torch.from_numpy(cluster).to(group) + 1
    return group[inverse]


def scope_mask(groups: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """CorrCLIP's scope: bool ``(N, N)`` of the key patches each query patch may attend to.

    ``groups``: int ``(N,)`` group per patch (0 = unsegmented); ``sim``: ``(N, N)``. A pair is
    in scope when both patches are in the same group other than 0, or when either is in group
    0 and their similarity exceeds the mean of the whole matrix.
    """
    same = (groups[:, None] == groups[None, :]) & (groups[:, None] != 0)
    loose = groups == 0
    return same | ((loose[:, None] | loose[None, :]) & (sim > sim.mean()))


def region_vote(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """CorrCLIP's map correction: every region takes its majority label.

    Args:
        labels: int ``(H, W)`` labels ``>= -1`` (-1 counts as a label of its own).
        ids: int ``(H, W)`` region id map; the smallest id present (normally 0, the unsegmented
            pixels) is left unchanged, as in CorrCLIP's code.

    Returns:
        int ``(H, W)`` labels (a copy; ties go to the smallest label, as ``torch.mode``).
    """
    labels = np.asarray(labels)
    ids = np.asarray(ids)
    if labels.shape != ids.shape:
        raise ValueError(f"labels {labels.shape} and ids {ids.shape} differ in shape")
    out = labels.copy()
    values, inverse = np.unique(ids, return_inverse=True)
    if len(values) < 2:
        return out
    inverse = inverse.reshape(-1)
    shifted = labels.reshape(-1).astype(np.int64) + 1  # -1 -> 0
    width = int(shifted.max()) + 1 if shifted.size else 1
    counts = np.bincount(inverse * width + shifted, minlength=len(values) * width)
    majority = counts.reshape(len(values), width).argmax(1) - 1  # first max: smallest label
    voted = majority[inverse].reshape(labels.shape).astype(labels.dtype)
    keep = inverse.reshape(labels.shape) == 0
    return np.where(keep, out, voted)
