"""Checks and mask helpers shared by the exporters, and the base of the per-run writers."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ovseg.result import SegmentationResult


def check_classes(classes: Any) -> list[str]:
    """Return ``classes`` as a list: non-empty, distinct, non-blank strings, else ``ValueError``."""
    if isinstance(classes, str) or not isinstance(classes, Iterable):
        raise TypeError(f"classes must be a sequence of strings; got {type(classes).__name__}")
    names = list(classes)
    if not names:
        raise ValueError("classes must not be empty")
    bad = [c for c in names if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"classes must be non-blank strings; got {bad}")
    if len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct; got {names}")
    return names


def check_result(result: Any, classes: list[str] | None = None) -> SegmentationResult:
    """Return ``result`` if it is a :class:`SegmentationResult` whose classes equal ``classes``."""
    if not all(hasattr(result, a) for a in ("label_map", "segments", "segment_map", "classes")):
        raise TypeError(f"expected an ovseg SegmentationResult; got {type(result).__name__}")
    if classes is not None and list(result.classes) != list(classes):
        raise ValueError(
            f"result classes {result.classes} differ from the run's classes {classes}; "
            "every result of one export must use the same classes in the same order"
        )
    return result


def relative_file_name(file_name: Any) -> str:
    """``file_name`` as a POSIX path relative to the input root (no ``..``, not absolute)."""
    if not isinstance(file_name, (str, os.PathLike)):
        raise TypeError(f"file_name must be a str or path; got {type(file_name).__name__}")
    path = PurePath(file_name)
    text = path.as_posix()
    if not str(file_name).strip() or text in ("", ".") or path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"file_name must be a non-empty path relative to the input root; got {file_name!r}"
        )
    return text


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, w, h]`` (ints, pixel edges) of a bool mask; ``[0, 0, 0, 0]`` if empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if not cols.size:
        return [0, 0, 0, 0]
    x0, y0 = int(cols[0]), int(rows[0])
    return [x0, y0, int(cols[-1]) + 1 - x0, int(rows[-1]) + 1 - y0]


@dataclass
class Region:
    """One exported object: a segment, or (with ``stuff``) the unsegmented pixels of a class."""

    mask: np.ndarray
    class_index: int
    score: float
    segment_id: int  # the Segment's id; 0 for a stuff region


def owned_class_map(result: SegmentationResult) -> np.ndarray:
    """int32 ``(H, W)``: the owning segment's class, else the label map's (``-1`` unlabeled)."""
    classes = result.label_map.copy()
    for seg in result.segments:
        classes[seg.mask] = seg.class_index
    return classes


def stuff_mask(result: SegmentationResult) -> np.ndarray:
    """bool ``(H, W)``: pixels that no segment owns."""
    owned = np.zeros(result.shape, dtype=bool)
    for seg in result.segments:
        owned |= seg.mask
    return ~owned


def regions(result: SegmentationResult, stuff: bool = False) -> list[Region]:
    """The non-empty segments in order; with ``stuff``, then one region per class (ascending)
    for labelled pixels no segment owns, scored by their mean confidence."""
    out = [
        Region(seg.mask, seg.class_index, seg.score, seg.id)
        for seg in result.segments
        if seg.mask.any()
    ]
    if stuff:
        free = stuff_mask(result)
        labels = np.where(free, result.label_map, -1)
        for c in np.unique(labels[labels >= 0]):
            mask = labels == c
            score = float(result.confidence[mask].mean())
            out.append(Region(mask, int(c), min(max(score, 0.0), 1.0), 0))
    return out


def ovseg_version() -> str:
    from ovseg import __version__

    return __version__


class RunWriter(ABC):
    """Base of the per-run writers: ``add`` results, then ``close`` writes the run's files.

    As a context manager it calls :meth:`close` on a clean exit and :meth:`abort` when the
    block raises, so a failed run leaves any earlier run file in place.
    """

    def __init__(self, classes: Any) -> None:
        self.classes = check_classes(classes)
        self._closed = False
        self._names: set[str] = set()
        self.written: Path | None = None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")

    def _claim(self, key: str, error: str) -> None:
        """Record ``key`` (a file of this run); raise ``ValueError(error)`` if already taken."""
        if key in self._names:
            raise ValueError(error)
        self._names.add(key)

    @abstractmethod
    def _finish(self) -> Path:
        """Write the run's file(s); each writer has its own."""

    def close(self) -> Path:
        """Write the run's file(s) atomically and return the main path; later calls return it."""
        if not self._closed:
            self.written = self._finish()
            self._closed = True
        if self.written is None:
            raise ValueError(f"{type(self).__name__} was aborted; nothing was written")
        return self.written

    def abort(self) -> None:
        """Close without writing the run file (files already written per image stay)."""
        self._closed = True

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
