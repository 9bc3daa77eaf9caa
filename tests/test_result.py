"""Tests for ovseg.result: validation, PNG/COCO/JSON exports, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as mask_utils

from ovseg import viz
from ovseg.result import (
    UNLABELED,
    Segment,
    SegmentationResult,
    check_png_classes,
    read_label_png,
)

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid-val"


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _result(
    label_map: np.ndarray, classes: list[str], image: np.ndarray | None = None
) -> SegmentationResult:
    """Build a consistent result: one segment per present class."""
    segments, segment_map = [], np.full(label_map.shape, -1, np.int32)
    for c in range(len(classes)):
        mask = label_map == c
        if mask.any():
            segment_map[mask] = len(segments)
            segments.append(
                Segment(
                    len(segments) + 1,
                    mask,
                    c,
                    0.5 + c / (2 * len(classes)),
                    _box(mask),
                    int(mask.sum()),
                    0.9,
                )
            )
    confidence = np.where(label_map >= 0, 0.75, 0.0).astype(np.float32)
    return SegmentationResult(label_map, confidence, classes, segments, segment_map, image)


label_maps = st.integers(1, 6).flatmap(
    lambda k: st.tuples(
        st.just(k),
        arrays(
            np.int32,
            st.tuples(st.integers(1, 16), st.integers(1, 16)),
            elements=st.integers(-1, k - 1),
        ),
    )
)


def _small() -> SegmentationResult:
    labels = np.full((12, 16), UNLABELED, np.int32)
    labels[2:6, 3:9] = 0
    labels[7:, 10:] = 1
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return _result(labels, ["road", "sky"], image)


# ---------------------------------------------------------------- validation


def test_validation_errors() -> None:
    good = _small()
    lm, conf = good.label_map, good.confidence
    cases = [
        dict(label_map=lm.astype(np.float32)),
        dict(label_map=lm[None]),
        dict(label_map=np.full_like(lm, 2)),
        dict(confidence=conf[:3]),
        dict(confidence=conf + 1),
        dict(confidence=conf.astype(np.int32)),
        dict(classes=[]),
        dict(classes=["road", " "]),
        dict(classes=["road", "road"]),
        dict(segment_map=np.full_like(lm, 5)),
        dict(image=good.image[..., 0]),
        dict(image=good.image.astype(np.float32)),
    ]
    base = dict(
        label_map=lm,
        confidence=conf,
        classes=good.classes,
        segments=good.segments,
        segment_map=good.segment_map,
        image=good.image,
    )
    for change in cases:
        with pytest.raises(ValueError):
            SegmentationResult(**{**base, **change})
    with pytest.raises(ValueError, match="mask"):
        Segment(1, np.zeros((3, 3), np.uint8), 0, 0.5, (0, 0, 1, 1), 1, 0.5)
    with pytest.raises(ValueError, match="score"):
        Segment(1, np.zeros((3, 3), bool), 0, 1.5, (0, 0, 1, 1), 1, 0.5)
    with pytest.raises(ValueError, match="box"):
        Segment(1, np.zeros((3, 3), bool), 0, 0.5, (0, 0, 1), 1, 0.5)
    wrong_shape = Segment(1, np.zeros((3, 3), bool), 0, 0.5, (0, 0, 1, 1), 0, 0.5)
    with pytest.raises(ValueError, match="segment 1"):
        SegmentationResult(**{**base, "segments": [wrong_shape]})


def test_dtypes_normalised() -> None:
    good = _small()
    r = SegmentationResult(
        good.label_map.astype(np.int64),
        good.confidence.astype(np.float64),
        tuple(good.classes),
        good.segments,
        None,
        None,
    )
    assert r.label_map.dtype == np.int32 and r.confidence.dtype == np.float32
    assert r.segment_map.dtype == np.int32 and (r.segment_map == -1).all()
    assert isinstance(r.classes, list)


def test_float_rounding_slack_is_clipped() -> None:
    seg = Segment(1, np.ones((2, 2), bool), 0, 1.0000001, (0, 0, 2, 2), 4, 0.5)
    assert seg.score == 1.0
    conf = np.full((2, 2), np.float32(1.0000001))
    r = SegmentationResult(np.zeros((2, 2), np.int32), conf, ["a"], [seg])
    assert r.confidence.max() == 1.0
    with pytest.raises(ValueError, match="score"):
        Segment(1, np.ones((2, 2), bool), 0, float("nan"), (0, 0, 2, 2), 4, 0.5)


def test_areas() -> None:
    r = _small()
    areas = r.areas()
    assert list(areas) == ["road", "sky"]
    assert areas["road"] == pytest.approx(24 / 192)
    assert areas["sky"] == pytest.approx(30 / 192)


# ---------------------------------------------------------------- PNG


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(label_maps)
def test_png_round_trip(tmp_path: Path, case: tuple[int, np.ndarray]) -> None:
    k, labels = case
    r = _result(labels, [f"c{i}" for i in range(k)])
    path = r.save_png(tmp_path / "labels.png")
    back = read_label_png(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)
    with Image.open(path) as im:
        assert im.mode == "P"
        raw = np.asarray(im)
        pal = np.array(im.getpalette()[: 3 * k], np.uint8).reshape(k, 3)
        assert json.loads(im.info["ovseg:classes"]) == r.classes
    assert ((raw == 255) == (labels == UNLABELED)).all()
    np.testing.assert_array_equal(pal, viz.palette(k))


def test_png_too_many_classes(tmp_path: Path) -> None:
    labels = np.zeros((2, 2), np.int32)
    r = SegmentationResult(labels, np.zeros((2, 2), np.float32), [f"c{i}" for i in range(256)])
    with pytest.raises(ValueError, match="255"):
        r.save_png(tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
    check_png_classes(255)  # the limit itself is fine
    with pytest.raises(ValueError, match="at most 255 classes .* got 256"):
        check_png_classes(256)


def test_read_label_png_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_label_png(tmp_path / "missing.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode RGB"):
        read_label_png(tmp_path / "rgb.png")


def test_camvid_label_png_round_trip(tmp_path: Path) -> None:
    labels_dir = CAMVID / "labels"
    if not labels_dir.is_dir():
        pytest.skip(f"CamVid validation data not found at {CAMVID}")
    source = sorted(labels_dir.glob("*.png"))[0]
    raw = read_label_png(source)
    classes = (CAMVID / "classes.txt").read_text().split("\n")
    classes = [c for c in classes if c.strip()]
    labels = np.where(raw >= len(classes), UNLABELED, raw).astype(np.int32)
    assert labels.shape == (360, 480) and (labels >= 0).any() and (labels == -1).any()
    r = _result(labels, classes)
    np.testing.assert_array_equal(read_label_png(r.save_png(tmp_path / "camvid.png")), labels)


# ---------------------------------------------------------------- COCO


# pycocotools' decode trips a numpy 2 DeprecationWarning inside its Cython code.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@settings(max_examples=40, deadline=None)
@given(label_maps)
def test_coco_rle_area_bbox_match_masks(case: tuple[int, np.ndarray]) -> None:
    k, labels = case
    r = _result(labels, [f"c{i}" for i in range(k)])
    coco = json.loads(json.dumps(r.to_coco(image_id=7, file_name="f.png")))
    h, w = labels.shape
    assert coco["images"] == [{"id": 7, "height": h, "width": w, "file_name": "f.png"}]
    assert [c["id"] for c in coco["categories"]] == list(range(1, k + 1))
    assert len(coco["annotations"]) == len(r.segments)
    for ann, seg in zip(coco["annotations"], r.segments, strict=True):
        rle = {
            "size": ann["segmentation"]["size"],
            "counts": ann["segmentation"]["counts"].encode(),
        }
        decoded = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(decoded, seg.mask)
        assert ann["area"] == int(seg.mask.sum())
        x0, y0, x1, y1 = _box(seg.mask)
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert ann["category_id"] == seg.class_index + 1
        assert ann["image_id"] == 7 and ann["iscrowd"] == 0 and ann["id"] == seg.id
        assert ann["score"] == pytest.approx(seg.score)


def test_coco_skips_empty_segments() -> None:
    labels = np.zeros((4, 4), np.int32)
    empty = Segment(1, np.zeros((4, 4), bool), 0, 0.5, (0, 0, 0, 0), 0, 0.5)
    full = Segment(2, np.ones((4, 4), bool), 0, 0.5, (0, 0, 4, 4), 16, 0.5)
    r = SegmentationResult(labels, np.ones((4, 4), np.float32), ["a"], [empty, full])
    assert [a["id"] for a in r.to_coco()["annotations"]] == [2]


# ---------------------------------------------------------------- files


def test_save_writes_three_files(tmp_path: Path) -> None:
    r = _small()
    out = tmp_path / "new" / "dir"
    paths = r.save(out, "frame")
    assert paths == {
        "labels": out / "frame_labels.png",
        "overlay": out / "frame_overlay.png",
        "json": out / "frame.json",
    }
    assert sorted(os.listdir(out)) == ["frame.json", "frame_labels.png", "frame_overlay.png"]
    data = json.loads(paths["json"].read_text())
    assert data["ovseg"]["classes"] == ["road", "sky"]
    assert data["ovseg"]["unlabeled"] == -1 and data["ovseg"]["png_unlabeled"] == 255
    assert data["images"][0]["file_name"] == "frame_labels.png"
    with Image.open(paths["overlay"]) as ov:
        assert ov.mode == "RGB" and ov.width > 16
    np.testing.assert_array_equal(read_label_png(paths["labels"]), r.label_map)


@pytest.mark.parametrize("stem", ["", "a/b", "../x"])
def test_save_rejects_bad_stem(tmp_path: Path, stem: str) -> None:
    with pytest.raises(ValueError, match="stem"):
        _small().save(tmp_path, stem)


def test_overlay_without_image() -> None:
    r = _small()
    r.image = None
    arr = np.asarray(r.overlay(legend=False))
    np.testing.assert_array_equal(arr, viz.colorize(r.label_map, 2))
    hidden = np.asarray(r.overlay(legend=False, hidden={0}))
    assert (hidden[r.label_map == 0] == 0).all()


def test_atomic_write_failure_leaves_old_file(tmp_path: Path, monkeypatch) -> None:
    r = _small()
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        r.save_json(target)
    monkeypatch.undo()
    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        r.save_png(tmp_path / "labels.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert target.read_text() == "old"
    monkeypatch.undo()
    r.save_json(target)
    assert json.loads(target.read_text())["annotations"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
