"""COCO panoptic: one RGB PNG per image plus one JSON per run.

PNG: segment id per pixel encoded as ``id = R + 256 * G + 256**2 * B`` (COCO panoptic
spec, ``panopticapi.utils.rgb2id``); ``0`` (black) is void: unlabelled pixels. Segment
ids are ``1..n`` per image: thing segments in result order, then stuff regions by
ascending class index. PNGs go to ``<out_dir>/<name>/`` under the source image's relative
path with the suffix ``.png`` (``a/img.jpg`` -> ``panoptic/a/img.png``).

JSON ``<out_dir>/<name>.json``: ``images`` ``[{id, file_name, width, height}]``
(``file_name`` relative to the input root), ``annotations``
``[{image_id, file_name, segments_info}]`` (``file_name`` the PNG, relative to the PNG
folder) with ``segments_info`` ``[{id, category_id, area, bbox, iscrowd}]`` (``bbox``
``[x, y, w, h]`` ints, pixel edges), and ``categories`` ``[{id, name, supercategory,
isthing}]`` with ``id`` = class index + 1.

Things and stuff: a segment of a *thing* class is one instance (``iscrowd`` 0); segments
of a *stuff* class merge, with the unsegmented pixels of that class, into one segment per
class. Labelled pixels that no segment owns form one segment per class; for a thing class
that region is marked ``iscrowd`` 1 (COCO's meaning: objects of the class, not separated
into instances). ``things`` names the thing classes by index; by default (``None``) a class
is a thing if any result of the run has a segment of it, so every segment stays an instance
and each class's unsegmented pixels become a crowd region (thing class) or stuff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from ovseg._io import atomic_write, atomic_write_text
from ovseg.exports._common import (
    RunWriter,
    check_result,
    mask_bbox,
    ovseg_version,
    owned_class_map,
    relative_file_name,
)

__all__ = ["CocoPanopticWriter", "id_to_rgb", "rgb_to_id", "save_coco_panoptic"]

MAX_SEGMENT_ID = 256**3 - 1


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB from int segment ids: ``R = id % 256``, ``G = id // 256 % 256``,
    ``B = id // 256**2``."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """int32 ``(H, W)`` segment ids from RGB: ``R + 256 * G + 256**2 * B``."""
    rgb = np.asarray(rgb).astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


class CocoPanopticWriter(RunWriter):
    """Write one panoptic PNG per :meth:`add`, and the run's JSON on :meth:`close`.

    Files are written atomically; a ``with`` block that raises writes no JSON. See the
    module docstring for the format and the thing/stuff rule.
    """

    def __init__(
        self,
        classes: Iterable[str],
        out_dir: str | os.PathLike,
        *,
        things: Iterable[int] | None = None,
        name: str = "panoptic",
        indent: int | None = None,
    ) -> None:
        super().__init__(classes)
        if not isinstance(name, str) or not name.strip() or Path(name).name != name:
            raise ValueError(f"name must be a plain file name; got {name!r}")
        self.out_dir = Path(out_dir)
        self.json_path = self.out_dir / f"{name}.json"
        self.png_dir = self.out_dir / name
        self.things = None if things is None else _check_things(things, len(self.classes))
        self.indent = indent
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._segmented: set[int] = set()  # classes with an instance segment (things=None)
        self._leftover: list[tuple[dict, int]] = []  # unsegmented regions, iscrowd set on close

    def add(self, result: Any, file_name: str | os.PathLike) -> int:
        """Write the PNG of ``result``; ``file_name`` is the image's path relative to the input
        root. Returns the image id."""
        self._check_open()
        result = check_result(result, self.classes)
        file_name = relative_file_name(file_name)
        png_name = PurePosixPath(file_name).with_suffix(".png").as_posix()
        self._claim(file_name, f"file_name {file_name!r} occurs twice in this run")
        self._claim(
            f"png:{png_name}", f"file_name {file_name!r}: PNG {png_name!r} is taken in this run"
        )
        ids, infos = self._segments(result)
        png = self.png_dir / png_name
        png.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(id_to_rgb(ids))
        atomic_write(png, lambda fh: image.save(fh, format="PNG"))
        image_id = len(self.images) + 1
        height, width = result.shape
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        self.annotations.append(
            {"image_id": image_id, "file_name": png_name, "segments_info": infos}
        )
        return image_id

    def _segments(self, result: Any) -> tuple[np.ndarray, list[dict]]:
        count = np.zeros(result.shape, dtype=np.int32)
        for seg in result.segments:
            count += seg.mask
        if (count > 1).any():
            raise ValueError("segments overlap; a panoptic map needs one owner per pixel")
        ids = np.zeros(result.shape, dtype=np.int32)
        infos: list[dict] = []

        def emit(mask: np.ndarray, class_index: int, iscrowd: int) -> dict:
            if len(infos) >= MAX_SEGMENT_ID:
                raise ValueError(f"more than {MAX_SEGMENT_ID} segments in one image")
            info = {
                "id": len(infos) + 1,
                "category_id": class_index + 1,
                "area": int(mask.sum()),
                "bbox": mask_bbox(mask),
                "iscrowd": iscrowd,
            }
            ids[mask] = info["id"]
            infos.append(info)
            return info

        for seg in result.segments:
            if seg.mask.any() and (self.things is None or seg.class_index in self.things):
                emit(seg.mask, seg.class_index, 0)
                self._segmented.add(seg.class_index)
        labels = owned_class_map(result)
        labels[ids > 0] = -1
        for c in np.unique(labels[labels >= 0]).tolist():
            mask = labels == c
            if self.things is None:  # decided on close, once the thing classes are known
                self._leftover.append((emit(mask, c, 0), c))
            else:  # a thing class's pixels left here are all unsegmented: a crowd region
                emit(mask, c, int(c in self.things))
        return ids, infos

    def thing_classes(self) -> set[int]:
        """Indices of the thing classes (with ``things=None``: those segmented so far)."""
        return set(self._segmented) if self.things is None else set(self.things)

    def to_dict(self) -> dict[str, Any]:
        """The panoptic JSON dict as it stands."""
        things = self.thing_classes()
        for info, c in self._leftover:
            info["iscrowd"] = int(c in things)
        categories = [
            {
                "id": i + 1,
                "name": n,
                "supercategory": "thing" if i in things else "stuff",
                "isthing": int(i in things),
            }
            for i, n in enumerate(self.classes)
        ]
        return {
            "info": {"description": "ovseg COCO panoptic export", "version": ovseg_version()},
            "licenses": [],
            "images": list(self.images),
            "annotations": list(self.annotations),
            "categories": categories,
        }

    def _finish(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.json_path, json.dumps(self.to_dict(), indent=self.indent))


def save_coco_panoptic(
    results_with_file_names: Iterable[tuple[Any, str | os.PathLike]],
    out_dir: str | os.PathLike,
    classes: Iterable[str],
    things: Iterable[int] | None = None,
    *,
    name: str = "panoptic",
) -> Path:
    """Write the PNGs and JSON of :class:`CocoPanopticWriter` for ``(result, file_name)``
    pairs; return the JSON path."""
    writer = CocoPanopticWriter(classes, out_dir, things=things, name=name)
    with writer:
        for item in results_with_file_names:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"expected (result, file_name) pairs; got {type(item).__name__}")
            writer.add(*item)
    return writer.close()


def _check_things(things: Iterable[int], k: int) -> frozenset[int]:
    if isinstance(things, (str, bytes)) or not isinstance(things, Iterable):
        raise TypeError(f"things must be a set of class indices; got {type(things).__name__}")
    out = set()
    for t in things:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < k:
            raise ValueError(f"things must hold class indices in [0, {k}); got {t!r}")
        out.add(int(t))
    return frozenset(out)
