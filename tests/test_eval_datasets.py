"""Dataset readers on tiny fake trees in each benchmark's on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.eval.datasets import (
    CITYSCAPES_TRAIN_IDS,
    IGNORE,
    KINDS,
    builtin_classnames,
    detect_kind,
    open_dataset,
    parse_classnames,
)

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid-val"
H, W = 6, 8


def _img(path: Path, size=(W, H), ext=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _lab(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


def _raw(values) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    flat = np.asarray(values, np.uint8)
    out.flat[: flat.size] = flat
    return out


def test_builtin_classnames_sizes():
    sizes = {
        "voc21": 21,
        "voc20": 20,
        "context60": 60,
        "context59": 59,
        "coco_object": 81,
        "coco_stuff171": 171,
        "cityscapes": 19,
        "ade150": 150,
        "camvid": 11,
    }
    for kind, k in sizes.items():
        names, prompts = builtin_classnames(kind)
        assert len(names) == len(prompts) == k, kind
    names, prompts = builtin_classnames("voc21")
    assert names[0] == "background" and "sky" in prompts[0].split("; ")
    assert builtin_classnames("voc20")[0] == names[1:]
    assert builtin_classnames("context60")[0][1:] == builtin_classnames("context59")[0]


def test_parse_classnames():
    names, prompts = parse_classnames("# c\nroad; street\ntv: television; tv monitor\n\ncar\n")
    assert names == ["road", "tv", "car"]
    assert prompts == ["road; street", "television; tv monitor", "car"]
    with pytest.raises(ValueError):
        parse_classnames("# nothing\n")
    with pytest.raises(ValueError):
        parse_classnames("a\na\n")


@pytest.mark.parametrize("kind", ["voc21", "voc20"])
def test_voc(tmp_path, kind):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for stem in ("a", "b", "c"):
        _img(base / "JPEGImages" / f"{stem}.jpg")
        _lab(base / "SegmentationClass" / f"{stem}.png", _raw([0, 1, 20, 255]))
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nc\n")
    ds = open_dataset(tmp_path, kind)
    assert len(ds) == 2 and ds.names == ["a", "c"]
    s = ds[1]
    assert s.name == "c" and s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    if kind == "voc21":
        assert s.label.flat[:4].tolist() == [0, 1, 20, IGNORE] and ds.background_index == 0
    else:
        assert s.label.flat[:4].tolist() == [IGNORE, 0, 19, IGNORE] and ds.background_index is None
    assert detect_kind(tmp_path) == "voc21"


@pytest.mark.parametrize("kind", ["context60", "context59"])
def test_context(tmp_path, kind):
    base = tmp_path / "VOC2010"
    _img(base / "JPEGImages" / "x.jpg")
    _lab(base / "SegmentationClassContext" / "x.png", _raw([0, 59, 3]))
    ds = open_dataset(tmp_path, kind)
    lab = ds[0].label.flat[:3].tolist()
    assert lab == ([0, 59, 3] if kind == "context60" else [IGNORE, 58, 2])
    assert detect_kind(tmp_path) == "context60"


def test_ade(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    _img(base / "images" / "validation" / "ADE_val_1.jpg")
    _lab(base / "annotations" / "validation" / "ADE_val_1.png", _raw([0, 1, 150]))
    ds = open_dataset(tmp_path)
    assert ds.kind == "ade150" and ds.classes[0] == "wall"
    assert ds[0].label.flat[:3].tolist() == [IGNORE, 0, 149]
    _lab(base / "annotations" / "validation" / "ADE_val_1.png", _raw([151]))
    with pytest.raises(ValueError, match="151"):
        ds[0]


def test_cityscapes(tmp_path):
    name = "frankfurt_000000_000294"
    _img(tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png")
    _lab(
        tmp_path / "gtFine" / "val" / "frankfurt" / f"{name}_gtFine_labelIds.png",
        _raw([7, 26, 33, 0, 1, 6]),
    )
    ds = open_dataset(tmp_path)
    assert ds.kind == "cityscapes" and ds.names == [name]
    assert ds[0].label.flat[:6].tolist() == [0, 13, 18, IGNORE, IGNORE, IGNORE]
    assert sorted(CITYSCAPES_TRAIN_IDS.values()) == list(range(19))


def test_coco_stuff_raw_and_converted(tmp_path):
    _img(tmp_path / "images" / "val2017" / "000000000139.jpg")
    # raw stuffthingmaps: COCO id - 1; 0 person, 12 (stop sign, id 13) -> 11, 181 wood -> 170
    _lab(tmp_path / "annotations" / "val2017" / "000000000139.png", _raw([0, 12, 181, 255]))
    ds = open_dataset(tmp_path, "coco_stuff171")
    assert ds[0].label.flat[:4].tolist() == [0, 11, 170, IGNORE]
    assert ds.classes[11] == "stop sign" and ds.classes[170] == "wood"
    _lab(tmp_path / "annotations" / "val2017" / "000000000139.png", _raw([11]))  # unused id
    with pytest.raises(ValueError):
        ds[0]
    _lab(tmp_path / "annotations" / "val2017" / "000000000139_labelTrainIds.png", _raw([170]))
    assert open_dataset(tmp_path, "coco_stuff171")[0].label.flat[0] == 170


def test_coco_object(tmp_path):
    _img(tmp_path / "images" / "val2017" / "1.jpg")
    _lab(tmp_path / "annotations" / "val2017" / "1_instanceTrainIds.png", _raw([0, 80, 255]))
    assert detect_kind(tmp_path) == "coco_object"
    ds = open_dataset(tmp_path)
    assert ds.background_index == 0 and len(ds.classes) == 81
    assert ds[0].label.flat[:3].tolist() == [0, 80, IGNORE]


def _folder(root: Path, classes: str, values, n=2) -> None:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes)
    for i in range(n):
        _img(root / "images" / f"f{i}.png")
        _lab(root / "labels" / f"f{i}.png", _raw(values))


def test_generic_folder_with_ignore(tmp_path):
    _folder(tmp_path, "cat\ndog: dog; puppy\n", [0, 1, 9])
    ds = open_dataset(tmp_path, ignore_index=9)
    assert ds.kind == "folder" and ds.classes == ["cat", "dog"] and ds.prompts[1] == "dog; puppy"
    assert ds[0].label.flat[:3].tolist() == [0, 1, IGNORE]
    with pytest.raises(ValueError, match="outside"):
        open_dataset(tmp_path)[0]  # 9 is not a class and not the default ignore value 255


def test_camvid_layout(tmp_path):
    names = builtin_classnames("camvid")[0]
    _folder(tmp_path, "\n".join(names) + "\n", [0, 10, 11])
    ds = open_dataset(tmp_path)
    assert ds.kind == "camvid" and ds.prompts == builtin_classnames("camvid")[1]
    assert ds[1].label.flat[:3].tolist() == [0, 10, IGNORE]


def test_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="SegmentationClass"):
        open_dataset(tmp_path, "voc21")
    with pytest.raises(FileNotFoundError, match="cannot tell"):
        detect_kind(tmp_path)
    (tmp_path / "classes.txt").write_text("a\n")
    with pytest.raises(FileNotFoundError, match="image folder"):
        open_dataset(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset kind"):
        open_dataset(tmp_path, "voc")


def test_missing_image_for_label(tmp_path):
    _folder(tmp_path, "a\nb\n", [0])
    (tmp_path / "images" / "f1.png").unlink()
    with pytest.raises(FileNotFoundError, match="f1"):
        open_dataset(tmp_path)


def test_size_mismatch_names_file(tmp_path):
    _folder(tmp_path, "a\nb\n", [0], n=1)
    _img(tmp_path / "images" / "f0.png", size=(W + 1, H))
    ds = open_dataset(tmp_path)
    with pytest.raises(ValueError, match="f0.png"):
        ds[0]


def test_lazy_loading(tmp_path):
    _folder(tmp_path, "a\nb\n", [0], n=3)
    ds = open_dataset(tmp_path)
    (tmp_path / "labels" / "f2.png").write_bytes(b"not a png")  # only item 2 is broken
    assert ds[0].label.shape == (H, W)
    with pytest.raises(ValueError, match="f2.png"):
        ds[2]


def test_kinds_listed():
    assert set(KINDS) >= {
        "voc21",
        "voc20",
        "context60",
        "context59",
        "coco_object",
        "coco_stuff171",
        "cityscapes",
        "ade150",
        "camvid",
        "folder",
    }


def test_real_camvid():
    if not CAMVID.is_dir():
        pytest.skip(f"CamVid folder not found at {CAMVID}")
    ds = open_dataset(CAMVID)
    assert ds.kind == "camvid" and len(ds) == 101 and len(ds.classes) == 11
    s = ds[0]
    assert s.image.shape == (360, 480, 3)
    assert set(np.unique(s.label)) <= set(range(11)) | {IGNORE}
