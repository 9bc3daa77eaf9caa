"""Exports of segmentation results to formats that annotation and training tools read.

- COCO instances JSON, one per run: :class:`CocoInstancesWriter`, :func:`coco_record`,
  :func:`save_coco_instances` (RLE masks, ``bbox`` ``[x, y, w, h]``, ``category_id`` =
  class index + 1).
- COCO panoptic, RGB PNG per image (``id = R + 256 G + 256^2 B``) plus one JSON:
  :class:`CocoPanopticWriter`, :func:`save_coco_panoptic`.
- YOLO segmentation polygons, ``.txt`` per image plus ``data.yaml`` / ``classes.txt``:
  :class:`YoloWriter`, :func:`save_yolo`, :func:`yolo_lines`, :func:`save_yolo_classes`.
- ``supervision.Detections`` (XYXY boxes, bool masks): :func:`to_supervision`.

Every file is written atomically (temporary file in the target folder, then
``os.replace``). Results of one run must share the same classes (``ValueError`` otherwise);
file names are the source images' paths relative to the input root. OpenCV and supervision
are imported only by the functions that need them.
"""

from ovseg.exports.coco import CocoInstancesWriter, coco_record, save_coco_instances
from ovseg.exports.detections import to_supervision
from ovseg.exports.panoptic import CocoPanopticWriter, id_to_rgb, rgb_to_id, save_coco_panoptic
from ovseg.exports.yolo import (
    YoloWriter,
    mask_to_polygons,
    save_yolo,
    save_yolo_classes,
    yolo_lines,
)

__all__ = [
    "CocoInstancesWriter",
    "CocoPanopticWriter",
    "YoloWriter",
    "coco_record",
    "id_to_rgb",
    "mask_to_polygons",
    "rgb_to_id",
    "save_coco_instances",
    "save_coco_panoptic",
    "save_yolo",
    "save_yolo_classes",
    "to_supervision",
    "yolo_lines",
]
