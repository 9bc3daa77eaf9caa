"""COCO instances (object detection / instance segmentation) JSON, one file per run.

Format: ``images`` ``[{id, file_name, width, height}]`` with ``file_name`` the source
image's path relative to the input root (POSIX separators) and ids ``1..N`` in the order
added; ``categories`` ``[{id, name}]`` with ``id`` = class index + 1; ``annotations``
``[{id, image_id, category_id, segmentation, area, bbox, score, iscrowd}]`` with ids
``1..M`` unique across the run, ``segmentation`` an uncompressed-size, compressed-counts
RLE ``{"size": [H, W], "counts": str}`` (pycocotools), ``area`` its pixel count,
``bbox`` ``[x, y, w, h]`` in pixels (pixel edges, so ``w`` is the column count) and
``iscrowd`` 0. One annotation per non-empty segment of the result.

A run can be built from results as they come (:class:`CocoInstancesWriter`), or from
per-image records (:func:`coco_record`, JSON-serialisable, e.g. kept by a CLI that
processes a folder) merged at the end (:meth:`CocoInstancesWriter.add_record`,
:func:`save_coco_instances`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ovseg._io import atomic_write_text
from ovseg.exports._common import (
    RunWriter,
    check_classes,
    check_result,
    ovseg_version,
    regions,
    relative_file_name,
)

__all__ = ["CocoInstancesWriter", "coco_record", "save_coco_instances"]


def coco_record(result: Any, file_name: str | os.PathLike, *, stuff: bool = False) -> dict:
    """The COCO data of one image, without ids: a JSON-serialisable per-image record.

    Returns ``{"file_name", "width", "height", "classes", "annotations"}``; each annotation
    has ``category_id`` (class index + 1), ``segmentation`` (RLE, ``counts`` as str),
    ``area``, ``bbox`` ``[x, y, w, h]``, ``score`` and ``iscrowd`` 0. With ``stuff``, the
    labelled pixels that no segment owns add one annotation per class (score: their mean
    confidence).
    """
    result = check_result(result)
    height, width = result.shape
    annotations = []
    for region in regions(result, stuff=stuff):
        rle = mask_utils.encode(np.asfortranarray(region.mask, dtype=np.uint8))
        annotations.append(
            {
                "category_id": region.class_index + 1,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "score": float(region.score),
                "iscrowd": 0,
            }
        )
    return {
        "file_name": relative_file_name(file_name),
        "width": int(width),
        "height": int(height),
        "classes": list(result.classes),
        "annotations": annotations,
    }


class CocoInstancesWriter(RunWriter):
    """Collect images of one run and write one COCO instances JSON on :meth:`close`.

    >>> with CocoInstancesWriter(classes, "out/instances.json") as coco:
    ...     for path in images:
    ...         coco.add(segmenter(path), file_name=path.relative_to(root))

    The JSON is written atomically (temporary file in the same folder, then ``os.replace``);
    a ``with`` block that raises writes nothing. ``file_name`` must be unique in the run.
    """

    def __init__(
        self,
        classes: Iterable[str],
        path: str | os.PathLike,
        *,
        stuff: bool = False,
        indent: int | None = None,
    ) -> None:
        super().__init__(classes)
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"COCO output path is a directory: {self.path}")
        self.stuff = bool(stuff)
        self.indent = indent
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, result: Any, file_name: str | os.PathLike) -> int:
        """Add one result; ``file_name`` is the image's path relative to the input root.

        Returns the image id.
        """
        self._check_open()
        check_result(result, self.classes)
        return self.add_record(coco_record(result, file_name, stuff=self.stuff))

    def add_record(self, record: Mapping[str, Any]) -> int:
        """Add one per-image record from :func:`coco_record`; return the image id."""
        self._check_open()
        record = _check_record(record, self.classes)
        name = record["file_name"]
        self._claim(name, f"file_name {name!r} occurs twice in this run")
        image_id = len(self.images) + 1
        self.images.append(
            {
                "id": image_id,
                "file_name": record["file_name"],
                "width": record["width"],
                "height": record["height"],
            }
        )
        for ann in record["annotations"]:
            self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, **ann})
        return image_id

    def to_dict(self) -> dict[str, Any]:
        """The COCO dict as it stands (``info``, ``licenses``, ``images``, ``categories``,
        ``annotations``)."""
        return {
            "info": {"description": "ovseg COCO instances export", "version": ovseg_version()},
            "licenses": [],
            "images": list(self.images),
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.classes)],
            "annotations": list(self.annotations),
        }

    def _finish(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.path, json.dumps(self.to_dict(), indent=self.indent))


def save_coco_instances(
    items: Iterable[Mapping[str, Any] | tuple[Any, str | os.PathLike]],
    path: str | os.PathLike,
    classes: Iterable[str],
    *,
    stuff: bool = False,
    indent: int | None = None,
) -> Path:
    """Write one COCO instances JSON from ``(result, file_name)`` pairs and/or per-image
    records (:func:`coco_record`); return the path. Nothing is written if an item is bad."""
    writer = CocoInstancesWriter(classes, path, stuff=stuff, indent=indent)
    with writer:
        for item in items:
            if isinstance(item, Mapping):
                writer.add_record(item)
            elif isinstance(item, tuple) and len(item) == 2:
                writer.add(*item)
            else:
                raise TypeError(
                    "items must be (result, file_name) pairs or coco_record dicts; "
                    f"got {type(item).__name__}"
                )
    return writer.close()


def _check_record(record: Any, classes: list[str]) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise TypeError(f"a COCO record must be a mapping; got {type(record).__name__}")
    missing = {"file_name", "width", "height", "annotations"} - set(record)
    if missing:
        raise ValueError(f"COCO record lacks {sorted(missing)}")
    if "classes" in record and check_classes(record["classes"]) != classes:
        raise ValueError(
            f"record classes {record['classes']} differ from the run's classes {classes}"
        )
    width, height = record["width"], record["height"]
    if not all(isinstance(v, (int, np.integer)) and v > 0 for v in (width, height)):
        raise ValueError(f"record width/height must be positive ints; got {width}, {height}")
    annotations = []
    for ann in record["annotations"]:
        if not isinstance(ann, Mapping):
            raise TypeError(f"a COCO annotation must be a mapping; got {type(ann).__name__}")
        cat = ann.get("category_id")
        if not isinstance(cat, (int, np.integer)) or not 1 <= cat <= len(classes):
            raise ValueError(f"category_id must be in [1, {len(classes)}]; got {cat!r}")
        seg = ann.get("segmentation")
        if not isinstance(seg, Mapping) or list(seg.get("size", ())) != [height, width]:
            raise ValueError(f"segmentation must be an RLE of size [{height}, {width}]")
        ann = {k: v for k, v in ann.items() if k not in ("id", "image_id")}
        ann["category_id"] = int(cat)
        ann.setdefault("iscrowd", 0)
        annotations.append(ann)
    return {
        "file_name": relative_file_name(record["file_name"]),
        "width": int(width),
        "height": int(height),
        "annotations": annotations,
    }
