"""Readers for segmentation benchmarks in their standard on-disk layouts.

Every dataset is a lazy sequence of :class:`Sample` ``(name, image, label)``: ``image`` is RGB
uint8 (H, W, 3), ``label`` int64 (H, W) with class indices in ``[0, K)`` and the dataset's
``ignore_index`` for pixels the metric skips: :data:`IGNORE` (255), or :data:`IGNORE_WIDE`
(65535) for the benchmarks with more than 255 classes (ADE20K-847, Context-459).
``dataset.classes`` holds the K report names and ``dataset.prompts`` the K prompt strings
(synonyms separated by ``"; "``) from the class-name file of the benchmark.
``dataset.background_index`` is the index of a catch-all background class (VOC21, Context60,
COCO-Object) or None.

Kinds and expected layouts (``root`` is the folder named first):

- ``voc21`` / ``voc20``: ``VOC2012/`` with ``JPEGImages/*.jpg``, ``SegmentationClass/*.png``,
  ``ImageSets/Segmentation/val.txt`` (VOC20 drops background: 0 becomes ignore).
- ``context60`` / ``context59``: ``VOC2010/`` with ``JPEGImages/``,
  ``SegmentationClassContext/*.png`` (0 background, 1..59), ``ImageSets/SegmentationContext/
  val.txt`` (Context59 drops background).
- ``ade150``: ``ADEChallengeData2016/`` with ``images/validation/*.jpg``,
  ``annotations/validation/*.png`` (0 = ignore, class = value - 1).
- ``ade847`` (ADE20K-full): ``ADE20K_2021_17_01/`` with ``images_detectron2/validation/*.jpg``
  and ``annotations_detectron2/validation/*.tif``, as detectron2's
  ``prepare_ade20k_full_sem_seg.py`` writes them from the ``ADE20K_2021_17_01`` release
  (uint16 TIFF, value = class in 0..846, 65535 = ignore).
- ``context459``: ``VOC2010/`` with ``JPEGImages/``, ``annotations_detectron2/pc459_val/*.tif``
  (CAT-Seg's ``prepare_pascal_context_459.py``: the full ``LabelMap`` minus 1 as uint16 TIFF,
  value = class in 0..458, 65535 = ignore) and ``ImageSets/SegmentationContext/val.txt`` (used
  when present, as CorrCLIPv2's config does).
- ``cityscapes``: ``leftImg8bit/val/CITY/*_leftImg8bit.png``, ``gtFine/val/CITY/
  *_gtFine_labelIds.png`` (label ids mapped to the 19 train ids, others ignored).
- ``coco_stuff171``: ``images/val2017/*.jpg``, ``annotations/val2017/*_labelTrainIds.png``
  (0..170) or the raw stuffthingmaps ``*.png`` (COCO id - 1, mapped to 0..170).
- ``coco_object``: ``images/val2017/*.jpg``, ``annotations/val2017/*_instanceTrainIds.png``
  (0 background, 1..80 things).
- ``camvid``: ``images/*.png``, ``labels/*.png``, ``classes.txt``; value K (11) is ignored.
- ``folder``: ``images/``, ``labels/`` with the same stems, ``classes.txt`` (one class per
  line, ``name`` or ``name: prompt; synonym``); optional ignore value (default 255).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg.eval.labels import (
    CITYSCAPES_TRAIN_IDS,
    COCO_UNUSED_IDS,
    IGNORE,
    IGNORE_WIDE,
    INVALID,
    builtin_classnames,
    identity_lut,
    lut_of,
    parse_classnames,
    reduce_zero_lut,
    wide_lut,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
KINDS = (
    "voc21",
    "voc20",
    "context60",
    "context59",
    "coco_object",
    "coco_stuff171",
    "cityscapes",
    "ade150",
    "ade847",
    "context459",
    "camvid",
    "folder",
)


@dataclass(frozen=True)
class Sample:
    """One evaluation item: ``name`` (file stem), ``image`` uint8 (H, W, 3), ``label`` int64
    (H, W) in ``[0, K)`` or its dataset's ``ignore_index``."""

    name: str
    image: np.ndarray
    label: np.ndarray


class SegDataset(Sequence):
    """Lazy list of (stem, image path, label path) read on access.

    ``lut`` maps raw label values (uint8 / uint16 PNG or TIFF) to classes or ``ignore_index``
    (:data:`IGNORE`, or :data:`IGNORE_WIDE` for more than 255 classes); values it marks invalid
    raise ValueError naming the file.
    """

    def __init__(
        self,
        kind: str,
        root: Path,
        items: list[tuple[str, Path, Path]],
        classes: list[str],
        prompts: list[str],
        lut: np.ndarray,
        background_index: int | None = None,
        ignore_index: int = IGNORE,
    ) -> None:
        if not items:
            raise FileNotFoundError(f"no image/label pairs found for {kind!r} under {root}")
        if len(classes) > ignore_index:
            raise ValueError(
                f"at most {ignore_index} classes are supported with ignore index "
                f"{ignore_index}, got {len(classes)}"
            )
        self.kind, self.root, self.items = kind, Path(root), items
        self.classes, self.prompts = list(classes), list(prompts)
        self.lut, self.background_index = lut, background_index
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("use range indices; slices are not supported")
        stem, _, label_path = self.items[index]
        image = self.load_image(index)
        label = self.load_label(index)
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"label {label_path} has size {label.shape[::-1]} but its image "
                f"has {image.shape[1::-1]} (W, H)"
            )
        return Sample(stem, image, label)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    @property
    def names(self) -> list[str]:
        return [stem for stem, _, _ in self.items]

    def load_image(self, index: int) -> np.ndarray:
        from ovseg.image import load_image

        return load_image(self.items[index][1])

    def load_label(self, index: int) -> np.ndarray:
        """Converted label of item ``index``: int64 (H, W) in [0, K) or ``ignore_index``."""
        path = self.items[index][2]
        try:
            with Image.open(path) as im:
                raw = np.asarray(im)
        except OSError as e:  # PIL's UnidentifiedImageError and truncated files
            raise ValueError(f"cannot read label {path}: {e}") from e
        if raw.ndim != 2:
            raise ValueError(f"label {path} must be single-channel, got shape {raw.shape}")
        if not np.issubdtype(raw.dtype, np.integer) or raw.min() < 0:
            raise ValueError(f"label {path} must hold non-negative integers")
        lut = self.lut
        if raw.max() >= len(lut):
            lut = np.concatenate([lut, np.full(int(raw.max()) + 1 - len(lut), INVALID)])
        label = lut[raw.astype(np.int64)]
        if (label == INVALID).any():
            bad = np.unique(raw[label == INVALID])[:8].tolist()
            raise ValueError(
                f"label {path} has values {bad} outside the {len(self.classes)} "
                f"classes of {self.kind!r} and its ignore values"
            )
        return label


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"expected {what} at {path}")
    return path


def _first_with(root: Path, candidates: Sequence[str], marker: str) -> Path:
    for c in candidates:
        if (root / c / marker).exists():
            return root / c
    tried = ", ".join(str(root / c / marker) for c in candidates)
    raise FileNotFoundError(f"dataset folder not found: expected one of {tried}")


def _pairs(
    images: Path,
    labels: Path,
    stems: Sequence[str] | None = None,
    label_suffix: str = ".png",
    image_suffixes: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[tuple[str, Path, Path]]:
    _require(images, "an image folder")
    _require(labels, "a label folder")
    if stems is None:
        stems = sorted(
            p.name[: -len(label_suffix)] for p in labels.iterdir() if p.name.endswith(label_suffix)
        )
        if not stems:
            raise FileNotFoundError(f"no '*{label_suffix}' labels in {labels}")
    by_stem = {p.stem: p for p in images.iterdir() if p.suffix.lower() in image_suffixes}
    items = []
    for stem in stems:
        if stem not in by_stem:
            raise FileNotFoundError(f"no image for label {stem!r} in {images}")
        items.append((stem, by_stem[stem], _require(labels / f"{stem}{label_suffix}", "a label")))
    return items


def _split_stems(path: Path) -> list[str] | None:
    return path.read_text().split() if path.exists() else None


def _voc(root: Path, kind: str, split: str) -> SegDataset:
    names, prompts = builtin_classnames(kind)
    if kind.startswith("voc"):
        base = _first_with(root, (".", "VOC2012", "VOCdevkit/VOC2012"), "SegmentationClass")
        labels, split_dir = base / "SegmentationClass", "Segmentation"
    else:
        base = _first_with(root, (".", "VOC2010", "VOCdevkit/VOC2010"), "SegmentationClassContext")
        labels, split_dir = base / "SegmentationClassContext", "SegmentationContext"
    stems = _split_stems(base / "ImageSets" / split_dir / f"{split}.txt")
    items = _pairs(base / "JPEGImages", labels, stems)
    with_bg = kind in ("voc21", "context60")
    lut = identity_lut(len(names)) if with_bg else reduce_zero_lut(len(names))
    return SegDataset(kind, root, items, names, prompts, lut, 0 if with_bg else None)


def _ade(root: Path, split: str) -> SegDataset:
    base = _first_with(root, (".", "ADEChallengeData2016"), "annotations")
    sub = {"val": "validation"}.get(split, split)
    items = _pairs(base / "images" / sub, base / "annotations" / sub)
    names, prompts = builtin_classnames("ade150")
    return SegDataset("ade150", root, items, names, prompts, reduce_zero_lut(150))


def _ade847(root: Path, split: str) -> SegDataset:
    base = _first_with(root, (".", "ADE20K_2021_17_01"), "annotations_detectron2")
    sub = {"val": "validation"}.get(split, split)
    images, labels = base / "images_detectron2" / sub, base / "annotations_detectron2" / sub
    _require(labels, "16-bit TIFF labels (detectron2's prepare_ade20k_full_sem_seg.py)")
    items = _pairs(images, labels, label_suffix=".tif")
    names, prompts = builtin_classnames("ade847")
    lut = wide_lut(len(names))
    return SegDataset("ade847", root, items, names, prompts, lut, ignore_index=IGNORE_WIDE)


def _context459(root: Path, split: str) -> SegDataset:
    candidates = (".", "VOC2010", "VOCdevkit/VOC2010")
    base = _first_with(root, candidates, f"annotations_detectron2/pc459_{split}")
    labels = base / "annotations_detectron2" / f"pc459_{split}"
    stems = _split_stems(base / "ImageSets" / "SegmentationContext" / f"{split}.txt")
    items = _pairs(base / "JPEGImages", labels, stems, label_suffix=".tif")
    names, prompts = builtin_classnames("context459")
    lut = wide_lut(len(names))
    return SegDataset("context459", root, items, names, prompts, lut, ignore_index=IGNORE_WIDE)


def _cityscapes(root: Path, split: str) -> SegDataset:
    base = _first_with(root, (".", "cityscapes"), "gtFine")
    img_dir, gt_dir = base / "leftImg8bit" / split, _require(base / "gtFine" / split, "gtFine")
    _require(img_dir, "leftImg8bit images")
    items = []
    for label in sorted(gt_dir.glob("*/*_gtFine_labelIds.png")):
        stem = label.name[: -len("_gtFine_labelIds.png")]
        image = img_dir / label.parent.name / f"{stem}_leftImg8bit.png"
        items.append((stem, _require(image, "a leftImg8bit image"), label))
    mapping = {v: CITYSCAPES_TRAIN_IDS.get(v, IGNORE) for v in range(34)}
    names, prompts = builtin_classnames("cityscapes")
    return SegDataset("cityscapes", root, items, names, prompts, lut_of({**mapping, 255: IGNORE}))


def _coco(root: Path, kind: str, split: str) -> SegDataset:
    base = _first_with(root, (".", "coco_stuff164k", "coco"), "annotations")
    images, labels = base / "images" / f"{split}2017", base / "annotations" / f"{split}2017"
    _require(labels, "COCO annotations")
    names, prompts = builtin_classnames(kind)
    if kind == "coco_object":
        items = _pairs(images, labels, label_suffix="_instanceTrainIds.png")
        return SegDataset(kind, root, items, names, prompts, identity_lut(81), 0)
    if any(labels.glob("*_labelTrainIds.png")):
        items = _pairs(images, labels, label_suffix="_labelTrainIds.png")
        return SegDataset(kind, root, items, names, prompts, identity_lut(171))
    used = [i for i in range(182) if i not in COCO_UNUSED_IDS]
    items = _pairs(images, labels)
    lut = lut_of({**{raw: i for i, raw in enumerate(used)}, 255: IGNORE})
    return SegDataset(kind, root, items, names, prompts, lut)


def _folder(root: Path, kind: str, ignore_index: int | None) -> SegDataset:
    classes_file = _require(root / "classes.txt", "classes.txt (one class name per line)")
    names, prompts = parse_classnames(classes_file.read_text("utf-8"))
    if kind == "camvid":
        ref_names, ref_prompts = builtin_classnames("camvid")
        if names == ref_names:
            prompts = ref_prompts
        ignore_index = len(names) if ignore_index is None else ignore_index
    items = _pairs(root / "images", root / "labels")
    return SegDataset(
        kind,
        root,
        items,
        names,
        prompts,
        identity_lut(len(names), IGNORE if ignore_index is None else ignore_index),
    )


def detect_kind(root: str | Path) -> str:
    """Guess the dataset kind from the folder layout (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    probes: list[tuple[str, Callable[[Path], bool]]] = [
        ("folder", lambda r: (r / "classes.txt").exists()),
        ("voc21", lambda r: any(r.glob("**/SegmentationClass"))),
        ("context60", lambda r: any(r.glob("**/SegmentationClassContext"))),
        ("context459", lambda r: any(r.glob("**/annotations_detectron2/pc459_*"))),
        ("ade847", lambda r: any(r.glob("**/annotations_detectron2/validation"))),
        ("cityscapes", lambda r: any(r.glob("**/gtFine"))),
        ("ade150", lambda r: any(r.glob("**/annotations/validation"))),
        ("coco_object", lambda r: any(r.glob("**/annotations/*/*_instanceTrainIds.png"))),
        ("coco_stuff171", lambda r: any(r.glob("**/annotations/val2017"))),
    ]
    for kind, probe in probes:
        if probe(root):
            if kind == "folder":
                names, _ = parse_classnames((root / "classes.txt").read_text("utf-8"))
                return "camvid" if names == builtin_classnames("camvid")[0] else "folder"
            return kind
    raise FileNotFoundError(
        f"cannot tell the dataset kind of {root}: expected classes.txt with "
        f"images/ and labels/, or a standard layout ({', '.join(KINDS)})"
    )


def open_dataset(
    root: str | Path,
    kind: str | None = None,
    *,
    split: str = "val",
    ignore_index: int | None = None,
) -> SegDataset:
    """Open the dataset at ``root`` (kind detected when None). ``ignore_index`` is the raw label
    value to ignore for ``folder`` (default 255) and ``camvid`` (default K)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    kind = detect_kind(root) if kind is None else kind
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; allowed: {', '.join(KINDS)}")
    if kind in ("voc21", "voc20", "context60", "context59"):
        return _voc(root, kind, split)
    if kind == "ade150":
        return _ade(root, split)
    if kind == "ade847":
        return _ade847(root, split)
    if kind == "context459":
        return _context459(root, split)
    if kind == "cityscapes":
        return _cityscapes(root, split)
    if kind in ("coco_object", "coco_stuff171"):
        return _coco(root, kind, split)
    return _folder(root, kind, ignore_index)
