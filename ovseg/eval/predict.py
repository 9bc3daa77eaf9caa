"""Predictions for ``ovseg eval``: a dense method with its own protocol, SAM + CLIP, or the
oracle (each SAM proposal labelled with its majority ground-truth class), in dataset class
indices at the label size; and the resolved, hashed configuration that keys their cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ovseg._io import atomic_write
from ovseg.constants import (
    DEFAULT_CLIP,
    DEFAULT_METHOD,
    DEFAULT_SAM,
    PNG_UNLABELED,
    PNG_UNLABELED_WIDE,
    UNLABELED,
)
from ovseg.eval.datasets import IGNORE, SegDataset
from ovseg.result import read_label_png


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines the predictions (hashed to key the cache).

    ``short_side``: resize the input so its short side has this many pixels (None: as is).
    ``score_threshold``: minimum class probability for a mask to label pixels.
    ``grid``: automatic-grid options passed to ``Segmenter.segment`` / ``propose``.
    ``window``: sliding-window dense scoring with windows of this many pixels (stride half a
    window; ``scorer="dense"`` only), or None for one dense pass over the whole input.
    ``method``: a registered method (``"naclip"``...: with class-name files for the benchmark
    its own names, per-dataset settings and prediction rule; ``"sam-clip"``: SAM proposals
    scored by its region scorer).
    ``method_options``: the method's options (over its per-dataset settings).
    ``vfm``, ``bank``, ``aux_clip``: CorrCLIPv2's VFM, memory bank folder and auxiliary CLIP.
    """

    data: str
    kind: str
    split: str = "val"
    sam: str = DEFAULT_SAM
    clip: str = DEFAULT_CLIP
    method: str = DEFAULT_METHOD
    dino: str | None = None
    vfm: str | None = None
    bank: str | None = None
    aux_clip: str | None = None
    method_options: Mapping[str, Any] = field(default_factory=dict)
    scorer: str = "dense"
    templates: str = "imagenet"
    score_threshold: float = 0.0
    short_side: int | None = None
    random_weights: bool = False
    grid: Mapping[str, Any] = field(default_factory=dict)
    window: int | None = None

    def key(self) -> str:
        """12-hex-digit hash of the configuration."""
        fields = asdict(self) | {
            "grid": dict(self.grid),
            "method_options": dict(self.method_options),
        }
        for name in ("vfm", "bank", "aux_clip"):  # CorrCLIPv2's; absent: the keys as before
            if fields[name] is None:
                del fields[name]
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def oracle_scores(
    masks: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = IGNORE
) -> np.ndarray:
    """One-hot scores float32 (N, K): each mask's majority ground-truth class.

    ``masks`` bool (N, H, W); ``label`` int (H, W) in [0, K) or ``ignore_index``. Ignored pixels
    do not vote; a mask covering only ignored pixels gets an all-zero row (fusion drops it).
    """
    masks = np.asarray(masks, bool)
    label = np.asarray(label)
    if masks.ndim != 3 or masks.shape[1:] != label.shape:
        raise ValueError(f"masks {masks.shape} must be (N, H, W) with (H, W) = {label.shape}")
    valid = label != ignore_index
    votes = label[valid].astype(np.int64)
    flat = masks[:, valid]
    scores = np.zeros((len(masks), num_classes), np.float32)
    for i, m in enumerate(flat):
        counts = np.bincount(votes[m], minlength=num_classes)
        if counts.sum():
            scores[i, counts.argmax()] = 1.0
    return scores


def resize_short_side(image: np.ndarray, short_side: int | None) -> np.ndarray:
    """Resize RGB uint8 (H, W, 3) so min(H, W) == short_side (bicubic, aspect kept)."""
    if not short_side:
        return image
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def resize_labels(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an int (H, W) map (values kept, -1 included) to ``shape``."""
    if label.shape == tuple(shape):
        return label
    h, w = label.shape
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(int)
    return label[rows[:, None], cols[None, :]]


def write_label_png(path: Path, prediction: np.ndarray) -> None:
    """Atomically write int (H, W) in [-1, 65535) as a PNG: uint8 (-1 -> 255) when every value
    is below 255, else 16-bit (-1 -> 65535; benchmarks with more than 255 classes)."""
    wide = prediction.size and int(prediction.max()) >= PNG_UNLABELED
    if wide and int(prediction.max()) >= PNG_UNLABELED_WIDE:
        raise ValueError(f"label values must be below {PNG_UNLABELED_WIDE}, got {prediction.max()}")
    dtype, unlabeled = (np.uint16, PNG_UNLABELED_WIDE) if wide else (np.uint8, PNG_UNLABELED)
    array = np.where(prediction < 0, unlabeled, prediction).astype(dtype)
    atomic_write(path, lambda fh: Image.fromarray(array).save(fh, format="PNG"))


def read_prediction(
    pred_dir: Path, stem: str, file_name: str | None = None
) -> tuple[Path, np.ndarray]:
    """Read ``PRED_DIR/STEM.png``, ``STEM_labels.png`` or ``FILE_NAME_labels.png`` (what
    ``ovseg segment`` writes for the image file ``FILE_NAME``, e.g. ``x.jpg_labels.png``) as
    int32 (H, W) with :func:`~ovseg.result.read_label_png` (8 or 16-bit; unlabeled -> -1)."""
    names = [f"{stem}.png", f"{stem}_labels.png"]
    if file_name:
        names.append(f"{file_name}_labels.png")
    for name in names:
        if (pred_dir / name).is_file():
            return pred_dir / name, read_label_png(pred_dir / name)
    raise FileNotFoundError(f"no prediction for {stem!r}: expected {pred_dir / (stem + '.png')}")


class _SamOnly:
    """The automatic-grid proposals of a Segmenter without its CLIP (all the oracle needs)."""

    def __init__(self, sam, device, random_weights: bool):
        from ovseg.models.build import build_sam, resolve_device
        from ovseg.proposals.grid import fused_attention
        from ovseg.proposals.sam import Proposer
        from ovseg.proposals.sam2 import Sam2Proposer, is_sam2_model

        model = build_sam(sam, resolve_device(device), random_weights=random_weights)
        if is_sam2_model(model):
            self.proposer = Sam2Proposer(model)
        else:
            fused_attention(model)
            self.proposer = Proposer(model)

    def propose(self, image: np.ndarray, **grid):
        """The automatic masks of ``image`` (SAM 2: Meta's generator defaults under ``grid``)."""
        from ovseg.proposals.grid import GridOptions, automatic_masks
        from ovseg.proposals.sam2 import Sam2Proposer
        from ovseg.proposals.sam2_grid import Sam2GridOptions

        self.proposer.set_image(image)
        sam2 = isinstance(self.proposer, Sam2Proposer)
        return automatic_masks(self.proposer, (Sam2GridOptions if sam2 else GridOptions)(**grid))


# ovseg's benchmark kinds -> the dense methods' dataset names (their class files and configs).
METHOD_DATASETS = {
    "voc21": "voc21",
    "voc20": "voc20",
    "context60": "context60",
    "context59": "context59",
    "coco_object": "coco_object",
    "coco_stuff171": "coco_stuff",
    "cityscapes": "cityscapes",
    "ade150": "ade20k",
    "ade847": "ade847",
    "context459": "context459",
}


class Predictor:
    """Model or oracle predictions for one dataset, in dataset class indices at label size.

    A model run follows the method protocol (:mod:`ovseg.methods.protocol`) under one of two
    protocols: the method's own, where it has class-name files for the benchmark (its names,
    its per-benchmark settings, the dataset's background index in its prediction rule); else
    ovseg's (the dataset's prompts as classes, its background words as background names, the
    input resized to ``short_side``; pixels left unlabeled become the background class)."""

    def __init__(self, config: EvalConfig, dataset: SegDataset, segmenter=None, device=None):
        from ovseg.pipeline import Segmenter
        from ovseg.scoring.vocabulary import Vocabulary

        self.config, self.dataset = config, dataset
        if config.scorer == "oracle":
            self.segmenter = segmenter or _SamOnly(config.sam, device, config.random_weights)
            return
        self.segmenter = segmenter or Segmenter(
            config.sam,
            config.clip,
            device,
            dino=config.dino,
            vfm=config.vfm,
            bank=config.bank,
            aux_clip=config.aux_clip,
            method=config.method,
            random_weights=config.random_weights,
            templates=config.templates,
        )
        seg = self.segmenter
        if seg.method.name != config.method:
            raise ValueError(
                f"the segmenter runs method {seg.method.name!r}, the evaluation asks "
                f"{config.method!r}"
            )
        name = METHOD_DATASETS.get(dataset.kind)
        entries = seg.method.class_file(name) if name else None
        self.own = entries is not None
        if self.own:
            self.vocab = Vocabulary.from_entries(entries, config.templates)
            if len(self.vocab.classes) != len(dataset.classes):
                raise ValueError(
                    f"{config.method}'s class file for {name} has {len(self.vocab.classes)} "
                    f"classes, the dataset {len(dataset.classes)}"
                )
        else:
            k, bg = len(dataset.classes), dataset.background_index
            self.fg = np.array([i for i in range(k) if i != bg], np.int64)
            used = {s.strip().lower() for i in self.fg for s in dataset.prompts[i].split(";")}
            words = [] if bg is None else dataset.prompts[bg].split(";")
            self.background = [
                s.strip() for s in words if s.strip() and s.strip().lower() not in used
            ]
            prompts = [dataset.prompts[i] for i in self.fg]
            self.vocab = Vocabulary(prompts, config.templates, self.background)
        self.method_config = seg.config(name, **dict(config.method_options))
        self.grid = seg.models.grid_options(**dict(config.grid))

    def _objects(self, image: np.ndarray):
        """SAM's automatic masks of ``image`` when the method refines with them, else None."""
        if not self.method_config.refine:
            return None
        return self.segmenter.models.automatic_masks(image, self.grid)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        from ovseg.fusion import compose, fuse
        from ovseg.methods.protocol import label_probability

        cfg, ds, seg = self.config, self.dataset, self.segmenter
        small = resize_short_side(image, cfg.short_side)
        if cfg.scorer == "oracle":
            masks = seg.propose(small, **cfg.grid)
            gt = resize_labels(label, small.shape[:2])
            scores = oracle_scores(masks.masks, gt, len(ds.classes), ds.ignore_index)
            pred = fuse(masks.masks, scores, ds.classes, proposal_scores=masks.scores).label_map
        elif self.own:
            method, models, mc, vocab = seg.method, seg.models, self.method_config, self.vocab
            probs = method.probabilities(small, vocab, models, mc)
            labels = method.predict(probs, mc, ds.background_index)
            pred = method.finish(small, probs, labels, models, mc).labels
            objects = self._objects(small)
            if objects is not None:
                k = len(vocab.classes)
                scores = method.mask_scores(
                    small, objects.masks, lambda: probs, vocab, models, mc
                )  # fmt: skip
                pred = compose(
                    pred,
                    None,
                    vocab.classes,
                    confidence=label_probability(probs, np.clip(pred, UNLABELED, k - 1)),
                    masks=objects.masks,
                    mask_scores=scores,
                    score_threshold=mc.score_threshold,
                ).label_map
        else:
            result = seg.label(small, self.vocab, self.method_config, objects=self._objects(small))
            lab = result.label_map
            pred = np.where(lab >= 0, self.fg[np.maximum(lab, 0)], UNLABELED)
        if ds.background_index is not None:
            pred = np.where(pred == UNLABELED, ds.background_index, pred)
        return resize_labels(np.asarray(pred).astype(np.int64), label.shape)
