"""Tests for ovseg.exports: each format is read back by the library that consumes it.

COCO instances -> pycocotools.coco.COCO; COCO panoptic -> the PNG decoded with the
panopticapi rgb2id rule (written here); YOLO -> supervision.DetectionDataset.from_yolo;
supervision.Detections -> sv.MaskAnnotator and DetectionDataset.as_coco read by pycocotools.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ovseg.exports import (
    CocoInstancesWriter,
    CocoPanopticWriter,
    YoloWriter,
    coco_record,
    mask_to_polygons,
    save_coco_instances,
    save_coco_panoptic,
    save_yolo,
    to_supervision,
)
from ovseg.result import Segment, SegmentationResult

CLASSES = ["cat", "dog", "grass", "sky"]


def _result(shape, parts, label_map=None, classes=CLASSES, image=True):
    """A result with segments ``parts`` = [(mask, class, score)], labels painted under them."""
    labels = np.full(shape, -1, np.int32) if label_map is None else label_map.copy()
    segment_map = np.full(shape, -1, np.int32)
    segments = []
    for j, (mask, c, score) in enumerate(parts):
        ys, xs = np.nonzero(mask)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        segments.append(Segment(j + 1, mask, c, score, box, int(mask.sum()), 0.9))
        labels[mask], segment_map[mask] = c, j
    confidence = np.where(labels >= 0, 0.6, 0.0).astype(np.float32)
    rgb = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8) if image else None
    return SegmentationResult(labels, confidence, list(classes), segments, segment_map, rgb)


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="module")
def run():
    """Three images: segments with a hole and several parts plus stuff, the same stem in
    another folder, and one with no segments (stuff and unlabelled only)."""
    shape = (37, 53)
    ring = _disk(shape, 18, 14, 11) & ~_disk(shape, 18, 14, 5)
    blobs = _disk(shape, 10, 40, 6)
    blobs[26:34, 33:50] = True  # a second, separate part
    labels = np.full(shape, -1, np.int32)
    labels[:4] = 2  # grass, no segment owns it
    labels[-3:, :20] = 3  # sky
    r1 = _result(shape, [(ring, 0, 0.9), (blobs, 1, 0.7)], labels)
    shape2 = (29, 31)
    square = np.zeros(shape2, bool)
    square[5:20, 3:25] = True
    square[9:14, 8:13] = False  # hole
    labels2 = np.full(shape2, 3, np.int32)
    labels2[25:, 20:] = 0  # cat pixels outside any segment
    r2 = _result(shape2, [(square, 0, 0.8)], labels2)
    labels3 = np.full((16, 21), 3, np.int32)
    labels3[:, :5] = -1
    r3 = _result((16, 21), [], labels3)
    return [(r1, "a/img.jpg"), (r2, "b/img.jpg"), (r3, "c/empty.png")]


def test_coco_instances_read_back_by_pycocotools(run, tmp_path):
    path = tmp_path / "out" / "instances.json"
    with CocoInstancesWriter(CLASSES, path) as coco:
        ids = [coco.add(r, name) for r, name in run]
    assert ids == [1, 2, 3]
    api = COCO(str(path))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == CLASSES
    assert api.getCatIds() == [1, 2, 3, 4]
    ann_ids = [a["id"] for a in api.dataset["annotations"]]
    assert len(ann_ids) == len(set(ann_ids)) == 3
    for image_id, (result, name) in zip(ids, run, strict=True):
        info = api.loadImgs(image_id)[0]
        assert info["file_name"] == name
        assert (info["height"], info["width"]) == result.shape
        anns = api.loadAnns(api.getAnnIds(imgIds=image_id))
        assert len(anns) == len(result.segments)
        for ann, seg in zip(anns, result.segments, strict=True):
            assert isinstance(ann["segmentation"]["counts"], str)
            np.testing.assert_array_equal(api.annToMask(ann).astype(bool), seg.mask)
            assert ann["category_id"] == seg.class_index + 1
            assert ann["area"] == seg.area and ann["iscrowd"] == 0
            x0, y0, x1, y1 = seg.box
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["score"] == pytest.approx(seg.score)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_coco_built_from_per_image_records(run, tmp_path):
    """A folder CLI can keep JSON records per image and merge them at the end."""
    records = [json.loads(json.dumps(coco_record(r, name))) for r, name in run]
    merged = save_coco_instances(records, tmp_path / "merged.json", CLASSES)
    direct = save_coco_instances(run, tmp_path / "direct.json", CLASSES)
    assert json.loads(merged.read_text()) == json.loads(direct.read_text())
    stuff = COCO(str(save_coco_instances(run, tmp_path / "s.json", CLASSES, stuff=True)))
    r1 = run[0][0]
    anns = stuff.loadAnns(stuff.getAnnIds(imgIds=1))
    assert [a["category_id"] for a in anns] == [1, 2, 3, 4]  # segments, then grass, sky
    np.testing.assert_array_equal(stuff.annToMask(anns[2]).astype(bool), r1.label_map == 2)


def test_coco_failed_run_leaves_old_file(run, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), CocoInstancesWriter(CLASSES, path) as coco:
        coco.add(*run[0])
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances.json"]
    with pytest.raises(ValueError, match="aborted"):
        coco.close()


def test_bad_input_is_refused(run, tmp_path):
    r1, name = run[0]
    other = _result((5, 5), [], classes=["cat", "dog", "grass", "tree"])
    for bad in ([], ["a", "a"], ["a", " "]):
        with pytest.raises(ValueError):
            CocoInstancesWriter(bad, tmp_path / "x.json")
    coco = CocoInstancesWriter(CLASSES, tmp_path / "x.json")
    with pytest.raises(TypeError, match="SegmentationResult"):
        coco.add(r1.label_map, name)
    with pytest.raises(ValueError, match="same classes"):
        coco.add(other, "o.jpg")
    for file_name in ("/abs/img.jpg", "../img.jpg", "", "."):
        with pytest.raises(ValueError, match="relative"):
            coco.add(r1, file_name)
    coco.add(r1, name)
    with pytest.raises(ValueError, match="twice"):
        coco.add(r1, name)
    record = coco_record(r1, "z.jpg")
    record["annotations"][0]["category_id"] = 9
    with pytest.raises(ValueError, match="category_id"):
        coco.add_record(record)
    with pytest.raises(ValueError, match="differ"):
        coco.add_record(coco_record(other, "o.jpg"))
    coco.close()
    with pytest.raises(ValueError, match="closed"):
        coco.add(r1, "later.jpg")
    with pytest.raises(TypeError):
        save_coco_panoptic([r1], tmp_path / "p", CLASSES)
    with pytest.raises(ValueError, match="class indices"):
        CocoPanopticWriter(CLASSES, tmp_path / "p", things={4})
    with pytest.raises(TypeError):
        to_supervision("not a result")
    with pytest.raises(ValueError, match="file_name"):  # a.jpg and a.png: one PNG / label file
        save_coco_panoptic([(r1, "a.jpg"), (r1, "a.png")], tmp_path / "p", CLASSES)
    yolo = YoloWriter(CLASSES, tmp_path / "y")
    yolo.add(r1, "a.jpg")
    with pytest.raises(ValueError, match="twice"):
        yolo.add(r1, "a.png")


def _rgb2id(png_path):
    """panopticapi.utils.rgb2id."""
    color = np.asarray(Image.open(png_path).convert("RGB")).astype(np.int32)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]


def test_coco_panoptic_default_things(run, tmp_path):
    json_path = save_coco_panoptic(run, tmp_path, CLASSES)
    data = json.loads(json_path.read_text())
    cats = {c["id"]: c for c in data["categories"]}
    assert [cats[i + 1]["isthing"] for i in range(4)] == [1, 1, 0, 0]  # cat, dog have segments
    assert [im["file_name"] for im in data["images"]] == [name for _, name in run]
    for (result, _), image, ann in zip(run, data["images"], data["annotations"], strict=True):
        assert ann["image_id"] == image["id"]
        ids = _rgb2id(tmp_path / "panoptic" / ann["file_name"])
        assert ids.shape == result.shape == (image["height"], image["width"])
        infos = ann["segments_info"]
        assert sorted(np.unique(ids[ids > 0]).tolist()) == [s["id"] for s in infos]
        np.testing.assert_array_equal(ids == 0, result.label_map < 0)  # void = unlabelled
        for seg, info in zip(result.segments, infos[: len(result.segments)], strict=True):
            np.testing.assert_array_equal(ids == info["id"], seg.mask)
            assert info["category_id"] == seg.class_index + 1 and info["iscrowd"] == 0
        owned = np.any([s.mask for s in result.segments], axis=0) if result.segments else False
        for info in infos[len(result.segments) :]:  # one region per class of free pixels
            c = info["category_id"] - 1
            np.testing.assert_array_equal(ids == info["id"], (result.label_map == c) & ~owned)
            assert info["iscrowd"] == cats[c + 1]["isthing"]
        for info in infos:
            mask = ids == info["id"]
            assert info["area"] == int(mask.sum()) and info["bbox"] == _bbox(mask)
    assert [a["file_name"] for a in data["annotations"]] == [
        "a/img.png",
        "b/img.png",
        "c/empty.png",
    ]
    r2_infos = data["annotations"][1]["segments_info"]  # cat pixels outside the segment
    assert [(s["category_id"], s["iscrowd"]) for s in r2_infos] == [(1, 0), (1, 1), (4, 0)]


def test_coco_panoptic_explicit_things(run, tmp_path):
    with CocoPanopticWriter(CLASSES, tmp_path, things=set(), name="sem") as writer:
        for result, name in run:
            writer.add(result, name)
    data = json.loads((tmp_path / "sem.json").read_text())
    assert all(c["isthing"] == 0 for c in data["categories"])
    for (result, _), ann in zip(run, data["annotations"], strict=True):
        ids = _rgb2id(tmp_path / "sem" / ann["file_name"])
        for info in ann["segments_info"]:  # one segment per class: all its pixels
            np.testing.assert_array_equal(
                ids == info["id"], result.label_map == info["category_id"] - 1
            )
            assert info["iscrowd"] == 0
    overlap = run[0][0]
    bad = SegmentationResult(
        overlap.label_map,
        overlap.confidence,
        CLASSES,
        [overlap.segments[0], Segment(2, overlap.segments[0].mask, 1, 0.5, (0, 0, 1, 1), 1, 1)],
    )
    with pytest.raises(ValueError, match="overlap"):
        save_coco_panoptic([(bad, "x.jpg")], tmp_path, CLASSES)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_yolo_read_back_by_supervision(run, tmp_path):
    import supervision as sv

    images = tmp_path / "images"
    with YoloWriter(CLASSES, tmp_path / "yolo") as writer:
        for result, name in run:
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(result.image).save(images / name)
            writer.add(result, name)
    yolo = tmp_path / "yolo"
    assert (yolo / "classes.txt").read_text().splitlines() == CLASSES
    assert (yolo / "labels" / "c" / "empty.txt").read_text() == ""
    for result, name in run:
        folder = Path(name).parent
        ds = sv.DetectionDataset.from_yolo(
            images_directory_path=str(images / folder),
            annotations_directory_path=str(yolo / "labels" / folder),
            data_yaml_path=str(yolo / "data.yaml"),
            force_masks=True,
        )
        assert ds.classes == CLASSES and len(ds) == 1
        _, _, det = ds[0]
        parts = [
            cv2.connectedComponents(s.mask.astype(np.uint8), connectivity=8)[0] - 1
            for s in result.segments
        ]
        assert len(det) == sum(parts)  # one line per connected part
        start = 0
        for seg, n in zip(result.segments, parts, strict=True):
            assert (det.class_id[start : start + n] == seg.class_index).all()
            rebuilt = det.mask[start : start + n].any(axis=0)
            assert _iou(rebuilt, seg.mask) >= 0.99, _iou(rebuilt, seg.mask)  # exact here
            start += n
    lines = save_yolo(run[0][0], tmp_path / "one.txt", stuff=True).read_text().splitlines()
    values = np.array([float(v) for line in lines for v in line.split()[1:]])
    assert len(lines) == 5 and values.min() >= 0 and values.max() <= 1  # 3 parts + grass, sky


@pytest.mark.parametrize("pixels", [[(3, 4)], [(3, 4), (3, 5)], [(2, 2), (3, 3)]])
def test_tiny_parts_become_polygons_that_fill_back(pixels):
    mask = np.zeros((7, 9), bool)
    for y, x in pixels:
        mask[y, x] = True
    (polygon,) = mask_to_polygons(mask)
    assert len(polygon) >= 3
    rebuilt = cv2.fillPoly(np.zeros(mask.shape, np.uint8), [polygon], 1).astype(bool)
    np.testing.assert_array_equal(rebuilt, mask)


def test_polygons_keep_holes(run):
    for result, _ in run[:2]:
        for seg in result.segments:
            rebuilt = np.zeros(seg.mask.shape, np.uint8)
            for polygon in mask_to_polygons(seg.mask):
                rebuilt |= cv2.fillPoly(np.zeros_like(rebuilt), [polygon], 1)
            assert _iou(rebuilt.astype(bool), seg.mask) >= 0.97


def test_random_blobs_fill_back_through_supervision():
    from supervision import polygon_to_mask

    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(20, 90, 2))
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
        mask = noise > np.quantile(noise, rng.uniform(0.2, 0.8))
        rebuilt = np.zeros_like(mask)
        for polygon in mask_to_polygons(mask):
            rebuilt |= polygon_to_mask(polygon, (w, h)).astype(bool)
        assert _iou(rebuilt, mask) >= 0.99


def test_to_supervision_annotators_and_dataset_export(run, tmp_path):
    import supervision as sv

    result = run[0][0]
    det = result.to_supervision()
    assert len(det) == 2 and det.mask.dtype == bool and det.mask.shape == (2, *result.shape)
    assert det.xyxy.dtype == np.float32
    np.testing.assert_array_equal(det.xyxy, [s.box for s in result.segments])
    assert det.class_id.tolist() == [0, 1] and det.data["class_name"].tolist() == ["cat", "dog"]
    assert det.confidence == pytest.approx([0.9, 0.7])
    painted = sv.MaskAnnotator().annotate(result.image.copy(), det)
    changed = (painted != result.image).any(axis=-1)
    assert changed[det.mask.any(axis=0)].mean() > 0.9 and not changed[~det.mask.any(0)].any()
    empty = to_supervision(run[2][0])
    assert len(empty) == 0 and empty.mask.shape == (0, 16, 21)
    assert len(to_supervision(run[2][0], stuff=True)) == 1  # the sky
    sv.MaskAnnotator().annotate(run[2][0].image.copy(), empty)

    paths = {}
    for r, name in run:
        path = tmp_path / "images" / name.replace("/", "_")
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(r.image).save(path)
        paths[str(path)] = to_supervision(r)
    ds = sv.DetectionDataset(classes=CLASSES, images=list(paths), annotations=paths)
    ds.as_coco(annotations_path=str(tmp_path / "sv_coco.json"))
    api = COCO(str(tmp_path / "sv_coco.json"))
    for r, path in zip([r for r, _ in run], paths, strict=True):
        (img,) = [i for i in api.dataset["images"] if i["file_name"] == Path(path).name]
        anns = api.loadAnns(api.getAnnIds(imgIds=img["id"]))
        assert len(anns) == len(r.segments)
        for ann, seg in zip(anns, r.segments, strict=True):
            assert _iou(api.annToMask(ann).astype(bool), seg.mask) >= 0.9


def test_import_stays_light():
    code = (
        "import sys, ovseg.exports, ovseg.result; "
        "print(sorted(m for m in ('cv2', 'supervision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
