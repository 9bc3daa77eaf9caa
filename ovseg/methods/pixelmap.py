"""Per-pixel class probabilities at the input size, computed tile by tile on demand.

A dense method's numbers are made at the model's working resolution (short side about
336-688 pixels); only its last steps run at the input size ``H x W``: the bilinear resize of
the cosine logits, NACLIP's PAMR, the softmax over the queries and the max over each class's
queries. :class:`PixelMap` keeps the small tensor those steps start from and computes any
window of the ``(C, H, W)`` result when asked, so that a full pass (labels, confidence, mask
scores) holds the output plus one tile's working set, never ``C x H x W``.

Each tile is the window of the whole-image computation: the bilinear resize
(``align_corners=False``) is evaluated for the window with torch's source coordinates and
order of operations, and PAMR refines the window grown by its receptive field
(:func:`~ovseg.methods.pamr.pamr_halo`, ``steps x max(dilations)``, clipped at the image
border) before it is cut back, so the replicated border of the grown window never reaches the
tile. Values agree with the whole-image tensors to float32 rounding (measured at logit scale
40: often bit for bit without PAMR, within 6e-6 with it).

Where each method's map starts (its last tensor below the input size):

- SCLIP, ClearCLIP, NACLIP, ProxyCLIP and CorrCLIP, sliding windows: the windows' averaged
  logits at the resized network input ``(Q, h, w)`` (:func:`~ovseg.methods.slide.
  slide_logits_lowres`), resized bilinearly to ``(H, W)``.
- SCLIP, ClearCLIP and ProxyCLIP, whole image: the patch-grid logits ``(Q, gh, gw)``, resized
  straight to ``(H, W)``.
- NACLIP, whole image (grid -> network input -> original, two bilinear steps): the logits at
  the network input ``(Q, h, w)`` (the first, small step is done before the map).
- NACLIP's PAMR (10 steps at dilations 8 and 16: a halo of 160 pixels), guided by the
  normalised network input ``(3, h, w)`` resized bilinearly to ``(H, W)``, window by window.
- Trident: the cosine logits on SAM's token grid ``(Q, vh, vw)`` (the two halves side by side
  with ``sam_halves``), resized to ``(H, W)``.

After the map, a method's own last step:

- CorrCLIP's vote (:func:`~ovseg.methods.regions.region_vote`) reads only the label map of
  :meth:`PixelMap.predict` and the region ids, both ``(H, W)``: output-sized.
- Trident's refinement (:mod:`~ovseg.methods.trident_refine`) reads the map at half resolution
  (``probs.resize((H // 2, W // 2))``, lazily): per class its maximum, the argmax inside each
  prompting region (``pick`` of the half-resolution labels, then the region's argmax) and the
  class's plane resized to SAM's mask-prompt size (``resize((H // 2, W // 2)).resize((ph,
  pw))``, small), all from one pass over tiles. What it still holds at full size today is its
  own: SAM's kept mask logits upsampled to ``(N, H, W)`` and its refined scores ``(K, H, W)``;
  both come from SAM's ``(N, 256, 256)`` low-resolution masks by bilinear steps and would
  tile the same way (:func:`~ovseg.methods.tiles.bilinear_window`).

Reductions return numpy arrays on the CPU; tiles are torch tensors on the device of the map's
source (the GPU where the method ran).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ovseg.methods.tiles import (
    LogitsSource,
    MapSource,
    ResizeSource,
    TensorSource,
    check_groups,
    check_logits_args,
    check_predict_args,
    check_size,
    check_span,
    group_rows,
    positive_int,
    row_plan,
    same_where_valid,
    zero_where_invalid,
)
from ovseg.structures import image_key

__all__ = ["DEFAULT_WORK_BYTES", "PixelMap"]

DEFAULT_WORK_BYTES = 512 * 2**20
"""Default working set of one tile, in bytes (the tile side is chosen to fit it)."""

_SLACK = 2  # freed tile buffers stay in glibc's heap for the next tile: RSS ~2x live tensors
_MIN_SIDE = 16
_MAX_SIDE = 4096
_F32 = 4


# ----------------------------------------------------------------------------- the map
class PixelMap:
    """Per-pixel values ``(C, H, W)`` float32 (class probabilities), computed tile by tile.

    Build one with :meth:`from_tensor` or :meth:`from_logits`; :meth:`select` regroups its
    rows (a background row as the max of the background names' rows) and :meth:`resize`
    resamples it, both lazily. Every reduction (:meth:`predict`, :meth:`pick`,
    :meth:`heatmap`, :meth:`mask_scores`, :meth:`numpy`) walks the tiles once (the area rule of
    :meth:`predict` twice) and holds the output plus one tile's working set.

    Attributes:
        shape: ``(C, H, W)``.
        work_bytes: the working set one tile may use; the automatic tile side fits it.
    """

    def __init__(self, source, groups=None, *, work_bytes=DEFAULT_WORK_BYTES, tile_size=None):
        self._source = source
        self._group_lists = groups
        self._groups = None if groups is None else row_plan(groups)
        rows = source.rows if groups is None else len(groups)
        self.shape = (rows, *source.size)
        self.work_bytes = positive_int(work_bytes, "work_bytes")
        self._tile_size = None if tile_size is None else positive_int(tile_size, "tile_size")
        self._predicted: tuple[np.ndarray, np.ndarray, str] | None = None  # the last predict()

    # -- constructors
    @classmethod
    def from_tensor(
        cls, probs: torch.Tensor, *, work_bytes: int = DEFAULT_WORK_BYTES, tile_size=None
    ) -> PixelMap:
        """A map over an existing ``(C, H, W)`` tensor (small images, tests)."""
        if isinstance(probs, np.ndarray):
            probs = torch.from_numpy(probs)
        if not isinstance(probs, torch.Tensor) or probs.ndim != 3 or min(probs.shape) < 1:
            raise TypeError("probs must be a non-empty (C, H, W) tensor")
        return cls(TensorSource(probs), work_bytes=work_bytes, tile_size=tile_size)

    @classmethod
    def from_logits(
        cls,
        logits: torch.Tensor,
        size: tuple[int, int],
        logit_scale: float,
        query_class: Sequence[int] | None = None,
        num_classes: int | None = None,
        *,
        guide: torch.Tensor | None = None,
        pamr_steps: int = 0,
        pamr_dilations: Sequence[int] = (8, 16),
        work_bytes: int = DEFAULT_WORK_BYTES,
        tile_size: int | None = None,
    ) -> PixelMap:
        """The map of a dense method's low-resolution cosine logits.

        Per pixel of the output, as the whole-image path computes it: ``logits`` resized
        bilinearly (``align_corners=False``) to ``size``; with ``pamr_steps`` PAMR guided by
        ``guide`` resized the same way (:func:`~ovseg.methods.pamr.pamr`); ``softmax(
        logit_scale * logits)`` over the ``Q`` queries; then per class the max over its queries
        (0 for a class without any), as :func:`~ovseg.methods.dense.class_max`.

        Args:
            logits: ``(Q, h, w)`` (or ``(1, Q, h, w)``) float cosine logits; kept (not
                copied), tiles are computed on its device.
            size: ``(H, W)``, the output (input image) size.
            logit_scale: the multiplier before the softmax (> 0).
            query_class: the class in ``[0, num_classes)`` of each query; None: one row per
                query (``C = Q``).
            num_classes: ``K`` (with ``query_class``).
            guide: ``(3, hg, wg)`` (or ``(1, 3, hg, wg)``) PAMR guide image (NACLIP: the
                normalised network input); required when ``pamr_steps > 0``.
            pamr_steps, pamr_dilations: PAMR iterations (0: none) and neighbour distances.
            work_bytes, tile_size: the working set of one tile, or a fixed tile side.
        """
        logits, size, groups, guide, dilations = check_logits_args(
            logits, size, logit_scale, query_class, num_classes, guide, pamr_steps, pamr_dilations
        )
        source = LogitsSource(logits.float(), size, float(logit_scale), guide, pamr_steps,
                               dilations)  # fmt: skip
        return cls(source, groups, work_bytes=work_bytes, tile_size=tile_size)

    # -- shape
    @property
    def num_classes(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.shape[1], self.shape[2]

    @property
    def device(self) -> torch.device:
        """Where tiles are computed."""
        return self._source.device

    def work(self, side: int) -> int:
        """Estimated bytes of the live tensors while one ``side x side`` tile is computed."""
        extra = 0
        if self._groups is not None:  # the regrouped rows, the largest group's copy
            extra = self.num_classes + max((len(m) for _, m in self._groups[3]), default=0)
        h, w = self.size
        return self._source.work(side) + extra * min(side, h) * min(side, w) * _F32

    @property
    def tile_size(self) -> int:
        """The side of the square tiles: the one given, else the largest (at most 4096, at
        least 16) whose estimated live tensors (:meth:`work`) take half of ``work_bytes``
        (freed tile buffers stay in the allocator's heap for the next tile, so the process
        grows by about ``work_bytes``)."""
        if self._tile_size is not None:
            return self._tile_size
        h, w = self.size
        per_pixel = 8 * _F32  # the reductions' temporaries (argmax, gathers)

        def fits(side: int) -> bool:
            extra = per_pixel * min(side, h) * min(side, w)
            return self.work(side) + extra <= self.work_bytes / _SLACK

        low, high = _MIN_SIDE, max(_MIN_SIDE, min(max(h, w), _MAX_SIDE))
        while low < high:  # the largest side that fits (the estimate grows with the side)
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low

    def __repr__(self) -> str:
        c, h, w = self.shape
        return f"PixelMap(classes={c}, size=({h}, {w}), tile_size={self.tile_size})"

    # -- tiles
    def tile(self, rows, cols) -> torch.Tensor:
        """Rows ``rows`` and columns ``cols`` (slices or ``(start, stop)`` pairs) of the map:
        a new float32 ``(C, h, w)`` tensor on :attr:`device`."""
        r0, r1 = check_span(rows, self.shape[1], "rows")
        c0, c1 = check_span(cols, self.shape[2], "cols")
        with torch.inference_mode():
            return group_rows(self._source.window(r0, r1, c0, c1), self._groups)

    def windows(self, tile_size: int | None = None) -> Iterator[tuple[slice, slice]]:
        """The tiles' ``(rows, cols)`` slices in raster order."""
        side = self.tile_size if tile_size is None else positive_int(tile_size, "tile_size")
        h, w = self.size
        for r in range(0, h, side):
            for c in range(0, w, side):
                yield slice(r, min(r + side, h)), slice(c, min(c + side, w))

    def tiles(self, tile_size: int | None = None) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """``(rows, cols, tile)`` for every tile, raster order (see :meth:`tile`)."""
        for rows, cols in self.windows(tile_size):
            yield rows, cols, self.tile(rows, cols)

    def numpy(self, tile_size: int | None = None) -> np.ndarray:
        """The whole map, float32 ``(C, H, W)`` (memory ``C x H x W``: small images only)."""
        out = np.empty(self.shape, np.float32)
        for rows, cols, t in self.tiles(tile_size):
            out[:, rows, cols] = t.cpu().numpy()
        return out

    # -- lazy views
    def select(self, groups: Sequence[Sequence[int]]) -> PixelMap:
        """A map whose row ``j`` is the max over this map's rows ``groups[j]`` (0 for an
        empty group), e.g. ``[[0], [1], ..., [k - 1], background_rows]``."""
        groups = check_groups(groups, self.num_classes)
        options = dict(work_bytes=self.work_bytes, tile_size=self._tile_size)
        if self._group_lists is not None and isinstance(self._source, LogitsSource):
            # probabilities are >= 0: a max over rows that are maxes over queries is the max
            # over the union of those queries (an empty row, 0, changes no max), one step
            union = [sorted({q for i in g for q in self._group_lists[i]}) for g in groups]
            return PixelMap(self._source, union, **options)
        return PixelMap(MapSource(self), groups, **options)

    def resize(self, size: tuple[int, int]) -> PixelMap:
        """This map resized bilinearly (``align_corners=False``) to ``size`` ``(H', W')``,
        as ``F.interpolate`` of the whole tensor would."""
        return PixelMap(ResizeSource(self, check_size(size)), work_bytes=self.work_bytes,
                        tile_size=self._tile_size)  # fmt: skip

    # -- reductions
    def predict(
        self,
        *,
        prob_threshold: float = 0.0,
        area_threshold: float | None = None,
        background_class: int | None = 0,
        tile_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and their probability, by the references' prediction rule, in tiles.

        As :func:`~ovseg.methods.dense.predict_labels`: SCLIP's area rule when
        ``area_threshold`` is set (a foreground class whose argmax count is not above
        ``area_threshold`` times all foreground counts gets probability 0; the counts need a
        first pass over every tile, then only tiles holding such a class are computed again),
        the argmax (first index on ties), then pixels whose top probability is below
        ``prob_threshold`` become ``background_class``.

        Args:
            background_class: the row of the threshold rules; None when both are off.

        Returns:
            ``labels`` int32 ``(H, W)`` in ``[0, C)`` and ``confidence`` float32 ``(H, W)``, the
            map's probability of each pixel's label (before the area rule's zeroing); the map
            keeps both, not copies, so that :meth:`pick` of these labels needs no pass.
        """
        c, h, w = self.shape
        check_predict_args(c, prob_threshold, area_threshold, background_class)
        bg = background_class
        labels = np.empty((h, w), np.int32)
        confidence = np.empty((h, w), np.float32)
        area_rule = area_threshold is not None
        bg_prob = np.empty((h, w), np.float32) if area_rule and prob_threshold > 0 else None
        counts = torch.zeros(c, dtype=torch.int64)
        with torch.inference_mode():
            for rows, cols, p in self.tiles(tile_size):
                lab = p.argmax(0)
                top = p.gather(0, lab[None])[0]
                if area_rule:
                    counts += torch.bincount(lab.flatten(), minlength=c).cpu()
                    if bg_prob is not None:
                        bg_prob[rows, cols] = p[bg].cpu().numpy()
                elif prob_threshold > 0:
                    low = top < prob_threshold
                    lab = torch.where(low, bg, lab)
                    top = torch.where(low, p[bg], top)
                labels[rows, cols] = lab.cpu().numpy()
                confidence[rows, cols] = top.cpu().numpy()
            if not area_rule:
                return self._remember(labels, confidence)
            fg = torch.ones(c, dtype=torch.bool)
            fg[bg] = False
            area = counts.to(torch.float32)[fg]
            factor = torch.ones(c)
            factor[fg] = (area > area_threshold * area.sum()).to(torch.float32)
            dropped = np.flatnonzero(factor.numpy() == 0)
            for rows, cols in self.windows(tile_size):
                if len(dropped) and np.isin(labels[rows, cols], dropped).any():
                    p = self.tile(rows, cols)
                    kept = p * factor.to(p.device).view(-1, 1, 1)
                    lab = kept.argmax(0)
                    top = kept.gather(0, lab[None])[0]
                    orig = p.gather(0, lab[None])[0]
                    if prob_threshold > 0:
                        low = top < prob_threshold
                        lab = torch.where(low, bg, lab)
                        orig = torch.where(low, p[bg], orig)
                    labels[rows, cols] = lab.cpu().numpy()
                    confidence[rows, cols] = orig.cpu().numpy()
                elif prob_threshold > 0:
                    low = confidence[rows, cols] < prob_threshold
                    labels[rows, cols][low] = bg
                    confidence[rows, cols][low] = bg_prob[rows, cols][low]
        return self._remember(labels, confidence)

    def _remember(self, labels: np.ndarray, confidence: np.ndarray):
        """Keep a prediction for :meth:`pick`, with hashes that show if a caller changes it."""
        self._predicted = (labels, confidence, image_key(labels) + image_key(confidence))
        return labels, confidence

    def pick(self, labels: np.ndarray, tile_size: int | None = None) -> np.ndarray:
        """The map's value of each pixel's row: float32 ``(H, W)``, 0 where ``labels`` is
        outside ``[0, C)`` (e.g. ``UNLABELED``). Labels that are those of the last
        :meth:`predict` (some of them possibly set outside ``[0, C)``) are answered from its
        confidence, without a pass over the tiles."""
        labels = np.asarray(labels)
        if labels.shape != self.size or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be an int array of shape {self.size}")
        if self._predicted is not None:
            known, confidence, kept = self._predicted
            unchanged = image_key(known) + image_key(confidence) == kept
            if unchanged and same_where_valid(labels, known, self.num_classes):
                out = confidence.copy()
                zero_where_invalid(out, labels, self.num_classes)
                return out
        out = np.zeros(self.size, np.float32)
        with torch.inference_mode():
            for rows, cols, p in self.tiles(tile_size):
                lab = torch.from_numpy(labels[rows, cols].astype(np.int64)).to(p.device)
                ok = (lab >= 0) & (lab < self.num_classes)
                val = p.gather(0, lab.clamp(0, self.num_classes - 1)[None])[0]
                out[rows, cols] = torch.where(ok, val, 0.0).cpu().numpy()
        return out

    def heatmap(self, row: int, tile_size: int | None = None) -> np.ndarray:
        """One row of the map (one class's probability), float32 ``(H, W)``."""
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise TypeError(f"row must be an int, got {row!r}")
        if not 0 <= row < self.num_classes:
            raise ValueError(f"row must be in [0, {self.num_classes}), got {row}")
        out = np.empty(self.size, np.float32)
        for rows, cols, p in self.tiles(tile_size):
            out[rows, cols] = p[int(row)].cpu().numpy()
        return out

    def mask_scores(self, masks: np.ndarray, tile_size: int | None = None) -> np.ndarray:
        """Mean of every row inside each mask: bool ``(N, H, W)`` -> float32 ``(N, C)``,
        clipped to ``[0, 1]`` (as :func:`ovseg.fusion.mask_class_scores`; sums in float64).
        Tiles no mask touches are skipped."""
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.dtype != bool or masks.shape[1:] != self.size:
            raise ValueError(f"masks must be bool (N, {self.size[0]}, {self.size[1]})")
        n, c = masks.shape[0], self.num_classes
        sums = torch.zeros((n, c), dtype=torch.float64)
        if n == 0:
            return np.zeros((0, c), np.float32)
        with torch.inference_mode():
            for rows, cols in self.windows(tile_size):
                part = masks[:, rows, cols].reshape(n, -1)
                present = np.flatnonzero(part.any(1))
                if not len(present):
                    continue
                p = self.tile(rows, cols).reshape(c, -1).cpu().double()
                step = max(1, self.work_bytes // (16 * part.shape[1]))
                for i in range(0, len(present), step):
                    idx = present[i : i + step]
                    sums[idx] += torch.from_numpy(part[idx]).double() @ p.T
        area = masks.reshape(n, -1).sum(1, dtype=np.int64).astype(np.float64)
        means = sums.numpy() / np.maximum(area, 1.0)[:, None]
        return np.clip(means, 0.0, 1.0).astype(np.float32)
