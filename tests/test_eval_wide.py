"""The benchmarks with more than 255 classes, in the layouts CorrCLIPv2's configs read:
ADE20K-847 (``ADE20K_2021_17_01/images_detectron2`` + ``annotations_detectron2``) and PASCAL
Context-459 (``VOC2010/JPEGImages`` + ``annotations_detectron2/pc459_val``), 16-bit TIFF labels
with 65535 = ignore. Tiny synthetic trees on disk; scores checked against a direct count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.eval.datasets import IGNORE_WIDE, detect_kind, open_dataset
from ovseg.eval.runner import evaluate

H, W = 12, 16
VOID = 65535


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _tiff(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path, format="TIFF")


def _labels(k: int, seed: int) -> np.ndarray:
    """A (H, W) uint16 map: a few high class values (above 255, and 255 itself, which is a
    class here, not the ignore value) and a void block."""
    rng = np.random.default_rng(seed)
    pool = np.array([0, 3, 254, 255, 256, k - 1])
    label = pool[rng.integers(0, len(pool), (H, W))]
    label[:3, :4] = VOID
    return label.astype(np.uint16)


def _ade847(root: Path, n: int = 2) -> Path:
    base = root / "ADE20K_2021_17_01"
    for i in range(n):
        stem = f"ADE_val_0000000{i + 1}"
        _image(base / "images_detectron2" / "validation" / f"{stem}.jpg", i)
        _tiff(base / "annotations_detectron2" / "validation" / f"{stem}.tif", _labels(847, i))
    return root


def _context459(root: Path, stems=("2008_000002", "2008_000003"), listed=None) -> Path:
    base = root / "VOCdevkit" / "VOC2010"
    for i, stem in enumerate(stems):
        _image(base / "JPEGImages" / f"{stem}.jpg", 10 + i)
        _tiff(base / "annotations_detectron2" / "pc459_val" / f"{stem}.tif", _labels(459, 10 + i))
    if listed is not None:
        split = base / "ImageSets" / "SegmentationContext" / "val.txt"
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("".join(f"{s}\n" for s in listed))
    return root


def test_ade847_layout(tmp_path):
    root = _ade847(tmp_path)
    assert detect_kind(root) == "ade847"
    ds = open_dataset(root)
    assert ds.kind == "ade847" and len(ds) == 2 and ds.ignore_index == IGNORE_WIDE == VOID
    assert len(ds.classes) == 847 and ds.background_index is None
    assert ds.classes[:2] == ["wall", "building, edifice"] and ds.prompts[1] == "building; edifice"
    assert ds.classes[-1] == "adding machine, totalizer, totaliser"
    raw = _labels(847, 0)
    sample = ds[0]
    assert sample.name == "ADE_val_00000001" and sample.image.shape == (H, W, 3)
    # values are classes as stored (no zero reduction), 255 included; 65535 stays the ignore
    np.testing.assert_array_equal(sample.label, raw.astype(np.int64))
    assert {255, 846, VOID} <= set(np.unique(sample.label).tolist())
    # the same tree found from the release folder itself
    assert open_dataset(root / "ADE20K_2021_17_01", "ade847").names == ds.names


def test_context459_layout_and_split_file(tmp_path):
    stems = ("2008_000002", "2008_000003", "2008_000007")
    root = _context459(tmp_path, stems, listed=stems[:2])
    assert detect_kind(root) == "context459"
    ds = open_dataset(root)
    assert ds.kind == "context459" and ds.names == list(stems[:2])  # the split file's stems
    assert len(ds.classes) == 459 and ds.classes[:2] == ["accordion", "aeroplane"]
    assert ds.classes[-1] == "wool" and ds.ignore_index == VOID
    np.testing.assert_array_equal(ds[1].label, _labels(459, 11).astype(np.int64))
    # without the split file every label of the folder is read
    (root / "VOCdevkit" / "VOC2010" / "ImageSets" / "SegmentationContext" / "val.txt").unlink()
    assert open_dataset(root, "context459").names == list(stems)


def test_wrong_layouts_name_what_is_missing(tmp_path):
    # nothing of the layout
    with pytest.raises(FileNotFoundError, match="annotations_detectron2"):
        open_dataset(tmp_path, "ade847")
    with pytest.raises(FileNotFoundError, match="pc459_val"):
        open_dataset(tmp_path, "context459")
    # labels without the image folder
    root = _ade847(tmp_path / "a", n=1)
    images = root / "ADE20K_2021_17_01" / "images_detectron2" / "validation"
    for p in images.iterdir():
        p.unlink()
    images.rmdir()
    with pytest.raises(FileNotFoundError, match="images_detectron2"):
        open_dataset(root, "ade847")
    # labels as 8-bit PNGs (the ADE20K-150 release) instead of the converted TIFFs
    root = tmp_path / "b" / "ADE20K_2021_17_01"
    _image(root / "images_detectron2" / "validation" / "x.jpg", 0)
    labels = root / "annotations_detectron2" / "validation"
    labels.mkdir(parents=True)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(labels / "x.png")
    with pytest.raises(FileNotFoundError, match=r"\*\.tif"):
        open_dataset(root, "ade847")
    # a split file naming an image whose label is missing
    root = _context459(tmp_path / "c", ("2008_000002",), listed=("2008_000002", "2008_000009"))
    with pytest.raises(FileNotFoundError, match="2008_000009"):
        open_dataset(root, "context459")
    # a value that is neither a class nor the ignore value
    root = _ade847(tmp_path / "d", n=1)
    bad = _labels(847, 0)
    bad[5, 5] = 847
    _tiff(
        root
        / "ADE20K_2021_17_01"
        / "annotations_detectron2"
        / "validation"
        / "ADE_val_00000001.tif",
        bad,
    )
    with pytest.raises(ValueError, match="847"):
        open_dataset(root)[0]


def _direct_iou(preds: list[np.ndarray], labels: list[np.ndarray], k: int) -> dict[int, float]:
    """Per-class IoU counted pixel by pixel from the raw maps (void pixels skipped; a
    prediction of -1 is a miss), for every class present in a prediction or a label."""
    inter, union = {}, {}
    for pred, label in zip(preds, labels, strict=True):
        keep = label != VOID
        p, t = pred[keep], label[keep]
        for c in set(np.unique(p).tolist()) | set(np.unique(t).tolist()):
            if 0 <= c < k:
                inter[c] = inter.get(c, 0) + int(((p == c) & (t == c)).sum())
                union[c] = union.get(c, 0) + int(((p == c) | (t == c)).sum())
    return {c: inter[c] / union[c] for c in union if union[c]}


@pytest.mark.parametrize("kind", ["ade847", "context459"])
def test_scored_predictions_match_a_direct_count(tmp_path, kind):
    """16-bit prediction PNGs (65535 = unlabeled) scored by ``evaluate`` equal the IoU counted
    directly; pixels of class 255 count, void pixels do not."""
    k = {"ade847": 847, "context459": 459}[kind]
    root = _ade847(tmp_path / "d") if kind == "ade847" else _context459(tmp_path / "d")
    ds = open_dataset(root, kind)
    preds_dir = tmp_path / "preds"
    preds_dir.mkdir()
    rng = np.random.default_rng(7)
    preds, labels = [], []
    for i, stem in enumerate(ds.names):
        label = np.asarray(Image.open(ds.items[i][2])).astype(np.int64)
        pred = np.where(rng.random((H, W)) < 0.6, label, rng.choice([3, 255, 300, k - 1], (H, W)))
        pred = np.where(label == VOID, 255, pred)  # void pixels predicted as class 255: no effect
        pred[-1, -2:] = -1  # unlabeled: a miss for its true class
        Image.fromarray(np.where(pred < 0, VOID, pred).astype(np.uint16)).save(
            preds_dir / f"{stem}.png"
        )
        preds.append(pred)
        labels.append(label)
    report = evaluate(root, tmp_path / "r.json", kind=kind, predictions=preds_dir, progress=False)
    expected = _direct_iou(preds, labels, k)
    got = {i: v for i, v in enumerate(report["per_class_iou"].values()) if v is not None}
    assert got.keys() == expected.keys() and 255 in got
    for c, v in expected.items():
        assert got[c] == pytest.approx(v, abs=1e-12), ds.classes[c]
    assert report["miou"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert report["counts"]["pixels"] == sum(int((t != VOID).sum()) for t in labels)
    assert report["counts"]["unlabeled_pixels"] == 2 * len(preds) - sum(
        int((t[-1, -2:] == VOID).sum()) for t in labels
    )
    assert json.loads((tmp_path / "r.json").read_text())["dataset"]["kind"] == kind


def test_class_files_agree_with_corrclipv2s():
    """ovseg's class-name files of the two benchmarks list CorrCLIPv2's entries in label order
    (one query per line for the method, its comma-separated synonyms as ovseg's prompts)."""
    from ovseg.eval.labels import builtin_classnames
    from ovseg.methods.corrclipv2 import CorrCLIPv2

    for kind, k in (("ade847", 847), ("context459", 459)):
        entries = CorrCLIPv2.class_file(kind)
        names, prompts = builtin_classnames(kind)
        assert len(entries) == len(names) == k and all(len(e) == 1 for e in entries)
        assert names == [e[0] for e in entries]
        assert prompts == ["; ".join(s.strip() for s in e[0].split(",")) for e in entries]
    # CorrCLIPv2's Cityscapes file is its own ("people, person" is one query); the others are
    # CorrCLIP's
    assert CorrCLIPv2.class_file("cityscapes")[11] == ["people, person"]
    from ovseg.methods.classnames import class_names

    for name in ("voc21", "ade20k", "coco_stuff"):
        assert CorrCLIPv2.class_file(name) == class_names("corrclip", name)
    assert class_names("corrclip", "cityscapes")[11] == ["people"]
    # its per-dataset settings (configs/cfg_ade847.py, cfg_context459.py: Resize (2048, 448) and
    # (2048, 336), the segmentor's windows 336 / 112, no threshold)
    a, c = CorrCLIPv2.configure("ade847"), CorrCLIPv2.configure("context459")
    assert (a.short_side, a.long_cap, a.slide_crop, a.slide_stride) == (448, 2048, 336, 112)
    assert (c.short_side, c.long_cap, c.slide_crop, c.slide_stride) == (336, 2048, 336, 112)
    assert a.prob_threshold == c.prob_threshold == 0.0 and a.num_support == 20
    # methods without settings for them run with their defaults
    from ovseg.methods.registry import method_class

    assert method_class("naclip").configure("ade847").dataset == "ade847"
    assert method_class("naclip").class_file("ade847") is None


@pytest.mark.filterwarnings("ignore:ovseg")
def test_corrclipv2_eval_on_ade847_matches_a_direct_count(tmp_path):
    """``evaluate(method="corrclipv2")`` on the tiny ADE20K-847 tree with tiny random models:
    its predictions (cached as label PNGs) scored by a direct count give the report's IoUs."""
    from ovseg.eval.predict import read_prediction

    root = _ade847(tmp_path / "data")
    out = tmp_path / "run" / "v2.json"
    tiny = {"sam": "tiny-random", "clip": "tiny-random", "vfm": "tiny-random"}
    # small inputs and one template so that 847 classes stay fast; no bank (use_bank=False)
    small = {"short_side": 56, "templates": "photo", "method_options": {"use_bank": False}}
    report = evaluate(
        root, out, kind="ade847", method="corrclipv2", **tiny, **small, progress=False
    )
    assert report["config"]["method"] == "corrclipv2" and report["counts"]["computed"] == 2
    assert report["config"]["method_options"] == {"use_bank": False, "short_side": 56}
    assert len(report["dataset"]["classes"]) == 847
    ds = open_dataset(root)
    preds = [read_prediction(Path(report["cache"]), stem)[1] for stem in ds.names]
    labels = [np.asarray(Image.open(item[2])).astype(np.int64) for item in ds.items]
    assert all(p.shape == (H, W) and p.min() >= 0 and p.max() < 847 for p in preds)
    expected = _direct_iou(preds, labels, 847)
    got = {i: v for i, v in enumerate(report["per_class_iou"].values()) if v is not None}
    assert got.keys() == expected.keys()
    for c, v in expected.items():
        assert got[c] == pytest.approx(v, abs=1e-12)
    assert report["miou"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    # a second run reads the cache
    again = evaluate(root, out, kind="ade847", method="corrclipv2", **tiny, **small, progress=False)
    assert again["counts"]["cached"] == 2 and again["miou"] == report["miou"]
