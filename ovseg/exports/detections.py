"""Segments as ``supervision.Detections``, for supervision's annotators and dataset exporters."""

from __future__ import annotations

from typing import Any

import numpy as np

from ovseg.exports._common import check_result, regions

__all__ = ["to_supervision"]


def to_supervision(result: Any, *, stuff: bool = False) -> Any:
    """Return the non-empty segments of ``result`` as ``supervision.Detections``.

    Fields: ``xyxy`` float32 ``(N, 4)`` XYXY pixel edges of each mask (``x1, y1`` exclusive:
    one past the last column/row, the COCO ``[x, y, x + w, y + h]`` convention), ``mask``
    bool ``(N, H, W)``, ``class_id`` int ``(N,)`` (class index), ``confidence`` float32
    ``(N,)`` (segment score), ``data["class_name"]`` str ``(N,)`` and
    ``data["segment_id"]`` int ``(N,)`` (the ``Segment.id``). With ``stuff``, the labelled
    pixels no segment owns add one detection per class (mean confidence, segment id 0).

    supervision is imported here, on first use.
    """
    import supervision as sv

    result = check_result(result)
    height, width = result.shape
    found = regions(result, stuff=stuff)
    xyxy = np.zeros((len(found), 4), dtype=np.float32)
    for i, region in enumerate(found):
        cols = np.flatnonzero(region.mask.any(axis=0))
        rows = np.flatnonzero(region.mask.any(axis=1))
        xyxy[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    mask = np.stack([r.mask for r in found]) if found else np.zeros((0, height, width), dtype=bool)
    return sv.Detections(
        xyxy=xyxy,
        mask=mask,
        class_id=np.array([r.class_index for r in found], dtype=int),
        confidence=np.array([r.score for r in found], dtype=np.float32),
        data={
            "class_name": np.array([result.classes[r.class_index] for r in found], dtype=str),
            "segment_id": np.array([r.segment_id for r in found], dtype=int),
        },
    )
