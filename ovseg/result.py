"""The segmentation result and its exports: palette PNG, overlay, COCO RLE JSON.

Conventions: ``label_map`` is ``int32`` ``(H, W)`` with class indices in
``[0, K)`` and :data:`UNLABELED` (``-1``) for pixels no class fits. The PNG
export stores class ``i`` as pixel value ``i`` and unlabeled as ``255``; COCO
``category_id`` is class index + 1. Boxes are ``(x0, y0, x1, y1)`` pixels with
``x1, y1`` exclusive; COCO ``bbox`` is ``[x, y, w, h]``.

Every file is written atomically: to a temporary file in the target folder,
then moved into place with ``os.replace``; on error the temporary file is
removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin
from pycocotools import mask as mask_utils

from ovseg import viz
from ovseg._io import atomic_write, atomic_write_text
from ovseg.constants import PNG_MAX_CLASSES, PNG_UNLABELED, PNG_UNLABELED_WIDE, UNLABELED

__all__ = [
    "UNLABELED",
    "PNG_UNLABELED",
    "Segment",
    "SegmentationResult",
    "check_png_classes",
    "read_label_png",
]

_EPS = 1e-5  # float32 rounding slack for scores and confidences; values are clipped


def check_png_classes(count: int) -> None:
    """Refuse more classes than a label PNG holds (:data:`~ovseg.constants.PNG_MAX_CLASSES`):
    callers that write PNGs check this before any model runs.

    Raises:
        ValueError: one line naming the limit.
    """
    if count > PNG_MAX_CLASSES:
        raise ValueError(
            f"PNG export holds at most {PNG_MAX_CLASSES} classes (255 = unlabeled); got {count}:"
            " give fewer classes"
        )


@dataclass
class Segment:
    """One kept mask of the fused result.

    Attributes:
        id: 1-based segment id (also the COCO annotation id).
        mask: bool ``(H, W)``, the pixels this segment owns in the fused map.
        class_index: index into ``SegmentationResult.classes``.
        score: class probability in ``[0, 1]``.
        box: ``(x0, y0, x1, y1)`` int pixels, ``x1, y1`` exclusive.
        area: number of pixels.
        proposal_score: the proposer's own quality score (SAM predicted IoU).
        track_id: the object's id across the frames of a video (``None`` outside video).
    """

    id: int
    mask: np.ndarray
    class_index: int
    score: float
    box: tuple[int, int, int, int]
    area: int
    proposal_score: float
    track_id: int | None = None

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask)
        if self.mask.ndim != 2 or self.mask.dtype != np.bool_:
            raise ValueError(
                f"Segment.mask must be bool (H, W); got {self.mask.dtype} {self.mask.shape}"
            )
        self.id = int(self.id)
        self.class_index = int(self.class_index)
        if self.id < 1 or self.class_index < 0:
            raise ValueError(
                f"Segment.id must be >= 1 and class_index >= 0; got {self.id}, {self.class_index}"
            )
        self.score = float(self.score)
        if not -_EPS <= self.score <= 1.0 + _EPS:  # NaN fails too
            raise ValueError(f"Segment.score must be in [0, 1]; got {self.score}")
        self.score = min(max(self.score, 0.0), 1.0)
        box = tuple(int(v) for v in self.box)
        if len(box) != 4:
            raise ValueError(f"Segment.box must be (x0, y0, x1, y1); got {self.box}")
        self.box = box  # type: ignore[assignment]
        self.area = int(self.area)
        if self.area < 0:
            raise ValueError(f"Segment.area must be >= 0; got {self.area}")
        self.proposal_score = float(self.proposal_score)
        if self.track_id is not None:
            self.track_id = int(self.track_id)

    def __repr__(self) -> str:
        h, w = self.mask.shape
        track = "" if self.track_id is None else f", track_id={self.track_id}"
        return (
            f"Segment(id={self.id}, class_index={self.class_index}, score={self.score:.3f}, "
            f"box={self.box}, area={self.area}, mask={h}x{w}{track})"
        )


@dataclass
class SegmentationResult:
    """Dense labels, confidence and segments for one image.

    Attributes:
        label_map: int32 ``(H, W)``, values in ``[-1, K)``.
        confidence: float32 ``(H, W)`` in ``[0, 1]``.
        classes: the ``K`` class names, in the order given.
        segments: the kept segments; ``segments[j].class_index < K``.
        segment_map: int32 ``(H, W)``, index into ``segments`` or ``-1``.
        image: the input as RGB uint8 ``(H, W, 3)``, or ``None``.
    """

    label_map: np.ndarray
    confidence: np.ndarray
    classes: list[str]
    segments: list[Segment] = field(default_factory=list)
    segment_map: np.ndarray | None = None
    image: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        bad = [c for c in self.classes if not isinstance(c, str) or not c.strip()]
        if not self.classes or bad:
            raise ValueError(f"classes must be a non-empty list of non-blank strings; got {bad}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct; got {self.classes}")
        k = len(self.classes)
        self.label_map = _int_map(self.label_map, "label_map", k)
        shape = self.label_map.shape
        conf = np.asarray(self.confidence)
        if conf.shape != shape or conf.dtype.kind != "f":
            raise ValueError(f"confidence must be float {shape}; got {conf.dtype} {conf.shape}")
        conf = np.ascontiguousarray(conf, dtype=np.float32)
        low, high = (conf.min(), conf.max()) if conf.size else (0.0, 0.0)
        if not -_EPS <= low <= high <= 1 + _EPS:  # NaN fails too (inf is out of range)
            raise ValueError(f"confidence must be in [0, 1]; found [{low}, {high}]")
        self.confidence = conf if 0 <= low and high <= 1 else np.clip(conf, 0.0, 1.0)
        self.segments = list(self.segments)
        for seg in self.segments:
            if not isinstance(seg, Segment):
                raise ValueError(f"segments must hold Segment objects; got {type(seg).__name__}")
            if seg.mask.shape != shape or seg.class_index >= k:
                raise ValueError(
                    f"segment {seg.id}: mask {seg.mask.shape} must be {shape} and "
                    f"class_index {seg.class_index} < {k}"
                )
        if self.segment_map is None:
            self.segment_map = np.full(shape, -1, dtype=np.int32)
        self.segment_map = _int_map(self.segment_map, "segment_map", len(self.segments))
        if self.segment_map.shape != shape:
            raise ValueError(f"segment_map shape {self.segment_map.shape} != {shape}")
        if self.image is not None:
            img = np.asarray(self.image)
            if img.shape != (*shape, 3) or img.dtype != np.uint8:
                raise ValueError(f"image must be uint8 {(*shape, 3)}; got {img.dtype} {img.shape}")
            self.image = img

    def __repr__(self) -> str:
        h, w = self.shape
        shown = ", ".join(repr(c) for c in self.classes[:5])
        more = f", ... ({len(self.classes)} in all)" if len(self.classes) > 5 else ""
        labelled = float((self.label_map >= 0).mean()) if self.label_map.size else 0.0
        return (
            f"SegmentationResult({h}x{w}, classes=[{shown}{more}], "
            f"{len(self.segments)} segments, {100 * labelled:.1f}% labelled)"
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.label_map.shape  # type: ignore[return-value]

    def areas(self) -> dict[str, float]:
        """Fraction of all pixels per class, for every class (unlabeled excluded)."""
        labels = self.label_map[self.label_map >= 0]
        counts = np.bincount(labels, minlength=len(self.classes))
        total = max(self.label_map.size, 1)
        return {name: float(counts[i]) / total for i, name in enumerate(self.classes)}

    def overlay(
        self, alpha: float = 0.5, legend: bool = True, *, hidden: Iterable[int] = ()
    ) -> Image.Image:
        """Class colours blended on the image, with a legend (see :func:`ovseg.viz.overlay`).

        Without an image, the colours are drawn opaque on black.
        """
        if self.image is None:
            base, alpha = np.zeros((*self.shape, 3), dtype=np.uint8), 1.0
        else:
            base = self.image
        return viz.overlay(
            base, self.label_map, self.classes, alpha=alpha, legend=legend, hidden=hidden
        )

    def save_overlay(self, path: str | os.PathLike, **options: Any) -> Path:
        """Write :meth:`overlay` (``options`` passed on) as PNG to ``path``; return the path."""
        image = self.overlay(**options)
        return atomic_write(path, lambda fh: image.save(fh, format="PNG"))

    def to_png_image(self) -> Image.Image:
        """The label map as a mode ``P`` image: class ``i`` -> ``i``, unlabeled -> 255."""
        k = len(self.classes)
        check_png_classes(k)
        values = np.where(self.label_map == UNLABELED, PNG_UNLABELED, self.label_map)
        png = Image.fromarray(values.astype(np.uint8)).convert("P")
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[:k] = viz.palette(k)
        png.putpalette(pal.ravel().tolist())
        return png

    def save_png(self, path: str | os.PathLike) -> Path:
        """Write the palette PNG (see :meth:`to_png_image`) to ``path``; return the path.

        The class names are stored in the PNG text chunk ``ovseg:classes`` (JSON).
        """
        png = self.to_png_image()
        info = PngImagePlugin.PngInfo()
        info.add_text("ovseg:classes", json.dumps(self.classes))
        return atomic_write(path, lambda fh: png.save(fh, format="PNG", pnginfo=info))

    def to_coco(self, image_id: int = 1, file_name: str | None = None) -> dict[str, Any]:
        """Return a COCO dict: one annotation per non-empty segment, masks as RLE.

        ``segmentation`` is ``{"size": [H, W], "counts": str}`` (pycocotools RLE);
        ``area`` and ``bbox`` (``[x, y, w, h]``) are computed from that RLE;
        ``category_id`` is class index + 1; ``id`` is the segment id.
        """
        height, width = self.shape
        image: dict[str, Any] = {"id": int(image_id), "height": height, "width": width}
        if file_name is not None:
            image["file_name"] = str(file_name)
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(self.classes)]
        annotations = []
        for seg in self.segments:
            if not seg.mask.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(seg.mask, dtype=np.uint8))
            annotations.append(
                {
                    **({} if seg.track_id is None else {"track_id": seg.track_id}),
                    "id": seg.id,
                    "image_id": int(image_id),
                    "category_id": seg.class_index + 1,
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                    "area": int(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "score": seg.score,
                    "iscrowd": 0,
                }
            )
        return {"images": [image], "categories": categories, "annotations": annotations}

    def save_json(
        self, path: str | os.PathLike, image_id: int = 1, file_name: str | None = None
    ) -> Path:
        """Write :meth:`to_coco` plus an ``"ovseg"`` section to ``path``; return the path."""
        data = self.to_coco(image_id=image_id, file_name=file_name)
        data["ovseg"] = {
            "classes": self.classes,
            "unlabeled": UNLABELED,
            "png_unlabeled": PNG_UNLABELED,
            "areas": self.areas(),
            "version": _version(),
        }
        text = json.dumps(data, indent=1)
        return atomic_write_text(path, text)

    def save(self, out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
        """Write ``<stem>_labels.png``, ``<stem>_overlay.png`` and ``<stem>.json`` to ``out_dir``.

        Creates ``out_dir`` if needed. Returns ``{"labels", "overlay", "json"}`` -> path.
        """
        if not isinstance(stem, str) or not stem.strip() or Path(stem).name != stem:
            raise ValueError(f"stem must be a plain, non-empty file name stem; got {stem!r}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return {
            "labels": self.save_png(out / f"{stem}_labels.png"),
            "overlay": self.save_overlay(out / f"{stem}_overlay.png"),
            "json": self.save_json(out / f"{stem}.json", file_name=f"{stem}_labels.png"),
        }

    def to_supervision(self) -> Any:
        """The segments as ``supervision.Detections`` (see :func:`ovseg.exports.to_supervision`)."""
        from ovseg.exports import to_supervision

        return to_supervision(self)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as int32 ``(H, W)``: 8-bit (mode ``P`` or ``L``, 255 becomes
    :data:`UNLABELED`) or 16-bit (65535 becomes :data:`UNLABELED`; benchmarks with more than
    255 classes).

    Other values are returned as stored (class indices for ovseg's own exports).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label PNG not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            wide = im.mode.startswith("I;16") or im.mode == "I"
            if not wide and im.mode not in ("P", "L"):
                raise ValueError(
                    f"expected a single-channel P, L or 16-bit image; got mode {im.mode}"
                )
            values = np.asarray(im).astype(np.int32)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read label PNG {path}: {e}") from e
    values[values == (PNG_UNLABELED_WIDE if wide else PNG_UNLABELED)] = UNLABELED
    return values


def _int_map(values: Any, name: str, upper: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer (H, W) array; got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < -1 or arr.max() >= upper):
        raise ValueError(
            f"{name} values must be in [-1, {upper}); found [{arr.min()}, {arr.max()}]"
        )
    return np.ascontiguousarray(arr, dtype=np.int32)


def _version() -> str:
    """ovseg's version, imported (not looked up in ``sys.modules``, which a process that
    unpickled this module without importing the package, e.g. a Ray worker, may lack)."""
    from ovseg import __version__

    return __version__
