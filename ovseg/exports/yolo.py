"""YOLO segmentation labels (Ultralytics format): one ``.txt`` per image, ``data.yaml`` and
``classes.txt`` per run.

Each line is ``class x1 y1 x2 y2 ...``: the class index, then one polygon's vertices
normalised to ``[0, 1]`` (``x / W``, ``y / H``, 6 decimals). Vertices are pixel indices
of the part's boundary pixels (OpenCV contours, the convention of Ultralytics' own mask
conversion), so filling the polygon with its edges (``cv2.fillPoly``) gives the mask back.
Each 8-connected part of a segment is one line; its holes are joined to the outline by
zero-width seams, so filling with the even-odd rule keeps them open. A part of one or two
pixels repeats a vertex to have the three vertices a polygon line needs. A result with no
segments gives an empty file (a background image). Only segments are written, unless
``stuff`` adds one line per part of the labelled pixels that no segment owns.

``data.yaml`` holds ``nc`` and ``names`` (``{index: name}``), plus any keys given as
``data`` (e.g. ``path``, ``train``, ``val``); ``classes.txt`` one name per line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ovseg._io import atomic_write_text
from ovseg.exports._common import (
    RunWriter,
    check_classes,
    check_result,
    regions,
    relative_file_name,
)

__all__ = ["YoloWriter", "mask_to_polygons", "save_yolo", "save_yolo_classes", "yolo_lines"]


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """int32 ``(N, 2)`` ``(x, y)`` vertices per 8-connected part of a bool mask, holes bridged.

    Every polygon has at least 3 vertices (repeated for parts of one or two pixels).
    """
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W); got {mask.shape}")
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    links = hierarchy[0]  # [next, previous, first child, parent] per contour
    polygons = []
    for i, contour in enumerate(contours):
        if links[i][3] != -1:
            continue  # a hole; bridged into its outline below
        polygon = contour.reshape(-1, 2)
        child = links[i][2]
        while child != -1:
            polygon = _bridge(polygon, contours[child].reshape(-1, 2))
            child = links[child][0]
        if len(polygon) < 3:
            polygon = np.concatenate([polygon, np.repeat(polygon[-1:], 3 - len(polygon), 0)])
        polygons.append(polygon.astype(np.int32))
    return polygons


def _bridge(polygon: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice ``hole`` into ``polygon`` at their nearest vertices (a zero-width seam)."""
    best = (np.inf, 0, 0)
    p = polygon.astype(np.int64)
    for start in range(0, len(hole), 256):  # chunks keep the distance matrix small
        h = hole[start : start + 256].astype(np.int64)
        d = ((p[:, None, :] - h[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[0]:
            best = (d[i, j], int(i), start + int(j))
    _, i, j = best
    return np.concatenate([polygon[: i + 1], hole[j:], hole[: j + 1], polygon[i:]])


def yolo_lines(result: Any, *, stuff: bool = False) -> list[str]:
    """The YOLO segmentation lines of one result (see the module docstring)."""
    result = check_result(result)
    height, width = result.shape
    scale = np.array([width, height], dtype=np.float64)
    lines = []
    for region in regions(result, stuff=stuff):
        for polygon in mask_to_polygons(region.mask):
            coords = (polygon / scale).ravel()
            lines.append(f"{region.class_index} " + " ".join(f"{v:.6f}" for v in coords))
    return lines


def save_yolo(result: Any, labels_path: str | os.PathLike, *, stuff: bool = False) -> Path:
    """Write the YOLO label file of one result to ``labels_path`` (folders created)."""
    lines = yolo_lines(result, stuff=stuff)
    path = Path(labels_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def save_yolo_classes(
    out_dir: str | os.PathLike, classes: Iterable[str], data: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``data.yaml`` and ``classes.txt`` for ``classes`` to ``out_dir``; return both."""
    import yaml

    names = check_classes(classes)
    bad = [n for n in names if "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"YOLO class names cannot contain line breaks; got {bad}")
    extra = dict(data or {})
    if {"nc", "names"} & set(extra):
        raise ValueError("data must not set 'nc' or 'names'; they come from classes")
    content = {**extra, "nc": len(names), "names": dict(enumerate(names))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(content, sort_keys=False, allow_unicode=True)
    return (
        atomic_write_text(out / "data.yaml", text),
        atomic_write_text(out / "classes.txt", "".join(f"{n}\n" for n in names)),
    )


class YoloWriter(RunWriter):
    """Write ``<out_dir>/labels/<file_name with .txt>`` per :meth:`add`, and ``data.yaml``
    and ``classes.txt`` in ``out_dir`` on :meth:`close` (returns the ``data.yaml`` path).

    ``file_name`` is the image's path relative to the input root; its folders are kept
    (``a/img.jpg`` -> ``labels/a/img.txt``), so images with one stem in different folders
    do not collide. A ``with`` block that raises writes no ``data.yaml``.
    """

    def __init__(
        self,
        classes: Iterable[str],
        out_dir: str | os.PathLike,
        *,
        stuff: bool = False,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(classes)
        self.out_dir = Path(out_dir)
        self.labels_dir = self.out_dir / "labels"
        self.stuff = bool(stuff)
        self.data = dict(data or {})

    def label_path(self, file_name: str | os.PathLike) -> Path:
        """Where :meth:`add` writes the labels of ``file_name``."""
        rel = PurePosixPath(relative_file_name(file_name)).with_suffix(".txt")
        return self.labels_dir / rel

    def add(self, result: Any, file_name: str | os.PathLike) -> Path:
        """Write the label file of ``result``; return its path."""
        self._check_open()
        check_result(result, self.classes)
        path = self.label_path(file_name)
        rel = path.relative_to(self.labels_dir).as_posix()
        self._claim(rel, f"file_name {str(file_name)!r}: label file {rel!r} occurs twice")
        return save_yolo(result, path, stuff=self.stuff)

    def _finish(self) -> Path:
        return save_yolo_classes(self.out_dir, self.classes, self.data)[0]
