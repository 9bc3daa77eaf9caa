"""``sam3``: SAM 3's instances of every class, and a dense map from the same outputs.

SAM 3 (Meta, 2025) is trained on labelled masks (not training-free): for a noun phrase it
returns every instance (a score with its presence term, a box, a mask) and a semantic map. This
method runs it through :class:`~ovseg.proposals.sam3_detector.Sam3Detector`: the image is
encoded once, all prompts (each class's synonyms, then the background names) go through the
detector in batches, and each prompt's instances are those of the official ``transformers``
pipeline.

Per-pixel probabilities (:meth:`Sam3.probabilities`), for prompt q at each pixel of the model's
mask grid (288x288 for the official model), resized bilinearly to the image::

    p_q(x) = max( max_i s_i * sigmoid(m_i(x)),  sigmoid(presence) * sigmoid(sem(x)) )

over all of the prompt's DETR queries i (score ``s_i = sigmoid(logit_i) * sigmoid(presence)``,
mask logits ``m_i``) and, with ``semantic=True``, SAM 3's semantic head ``sem`` (trained only on
images where the concept is present, hence the presence factor); an entry (class or background
name) takes the max over its synonyms. Why this rule: each term is the model's own probability
that the pixel shows the concept (an instance's score times its mask probability; the presence
times the semantic probability), so the max is a probability in [0, 1] that needs no threshold,
and every pixel of a returned instance (score > ``threshold``, mask probability >
``mask_threshold``) gets at least ``threshold * mask_threshold`` for its class.

Labels (:meth:`Sam3.predict`): the argmax over the class rows and the background row; pixels
whose largest probability is below ``prob_threshold`` (default ``threshold *
mask_threshold``) take the background row (unlabeled). So a pixel inside an instance is always
labeled (with the most probable class there), and a pixel outside every instance is labeled only
where the semantic head is as sure.

Instances (:meth:`Sam3.finish`): every instance of every class, as the official pipeline gives
them per prompt; synonyms' instances belong to their class, and an instance is dropped when a
higher-scoring instance of another synonym of its class, or of a background name, overlaps it
with mask IoU >= ``dedup_iou``; background names' instances label nothing.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import torch

from ovseg.proposals.sam3 import Sam3Bundle, Sam3Instances
from ovseg.proposals.sam3_detector import Sam3Detector
from ovseg.structures import image_key

__all__ = ["Finished", "Sam3", "Sam3Config"]


@dataclass
class Finished:
    """What a method's last step leaves (the fields of the method protocol's ``Finished``):
    labels int64 (H, W) in [0, C); masks bool (N, H, W); mask_classes int (N,); mask_scores
    float (N,) in [0, 1]; confidence float (H, W) or None."""

    labels: np.ndarray
    masks: np.ndarray | None = None
    mask_classes: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    confidence: np.ndarray | None = None


def _unit(cfg, name: str, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0 <= value <= 1:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be a float in [0, 1]{extra}, got {value!r}")


@dataclass(frozen=True)
class Sam3Config:
    """Options of ``method="sam3"``.

    Attributes:
        method, dataset, score_threshold, refine: the options every method has (see the
            method protocol); ``dataset`` changes nothing for SAM 3.
        threshold: instance score threshold in [0, 1] (an instance is kept when
            ``sigmoid(logit) * sigmoid(presence) > threshold``).
        mask_threshold: mask probability threshold in [0, 1] (pixel in the mask when above).
        prob_threshold: pixels whose largest probability is below it are unlabeled, in [0, 1];
            None: ``threshold * mask_threshold``.
        semantic: include SAM 3's semantic head in the per-pixel probabilities.
        dedup_iou: mask IoU in [0, 1] at which an instance of a synonym or a background name
            suppresses a lower-scoring one (1.0: keep all).
        batch_size: prompts per detector forward (>= 1; memory and speed only; 1 reproduces
            the official pipeline bit for bit).
    """

    method: str = "sam3"
    dataset: str | None = None
    score_threshold: float = 0.0
    refine: str | None = None
    threshold: float = 0.5
    mask_threshold: float = 0.5
    prob_threshold: float | None = None
    semantic: bool = True
    dedup_iou: float = 0.5
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("score_threshold", "threshold", "mask_threshold", "dedup_iou"):
            _unit(self, name)
        _unit(self, "prob_threshold", optional=True)
        if self.refine not in (None, "masks"):
            raise ValueError(f"refine must be None or 'masks', got {self.refine!r}")
        if not isinstance(self.semantic, bool):
            raise ValueError(f"semantic must be True or False, got {self.semantic!r}")
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {b!r}")

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The names a caller may set (every field but ``method`` and ``dataset``)."""
        return tuple(f.name for f in fields(cls) if f.name not in ("method", "dataset"))

    @property
    def background_threshold(self) -> float:
        """``prob_threshold``, or ``threshold * mask_threshold`` when it is None."""
        if self.prob_threshold is not None:
            return float(self.prob_threshold)
        return float(self.threshold) * float(self.mask_threshold)


class Sam3:
    """SAM 3 as a segmentation method (see the module docstring).

    Args:
        **options: fields of :class:`Sam3Config`, validated now.
    """

    name = "sam3"
    needs = frozenset({"sam"})
    Config = Sam3Config
    defaults: dict = {}
    per_dataset: dict = {}
    hints = {"sam": "sam3"}

    def __init__(self, **options):
        self.options = dict(options)
        self._detectors: dict[int, Sam3Detector] = {}
        self._queries: OrderedDict[str, tuple] = OrderedDict()  # image -> its last vocabulary
        self._lock = threading.Lock()
        self.config()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Sam3({opts})"

    @classmethod
    def configure(cls, dataset: str | None = None, **options) -> Sam3Config:
        """The settings on ``dataset`` (the same on every dataset) with ``options`` over them."""
        allowed = Sam3Config.options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method 'sam3'; its options: {', '.join(allowed)}"
            )
        return Sam3Config(dataset=dataset, **{**cls.defaults, **options})

    def config(self, dataset: str | None = None, **overrides) -> Sam3Config:
        """Settings for one call: the construction options, then ``overrides``."""
        return self.configure(dataset, **{**self.options, **overrides})

    def detector(self, models, config: Sam3Config) -> Sam3Detector:
        """The :class:`~ovseg.proposals.sam3_detector.Sam3Detector` of ``models.sam`` (one per
        model)."""
        sam = models.sam
        if not isinstance(sam, Sam3Bundle):
            raise ValueError(
                f"method 'sam3' needs a SAM 3 model (sam='sam3' or 'sam3-tiny-random'), got "
                f"{type(sam).__name__}"
            )
        found = self._detectors.get(id(sam))
        if found is None or found.sam is not sam:
            found = self._detectors[id(sam)] = Sam3Detector(sam, config.batch_size)
        found.batch_size = config.batch_size
        return found

    def probabilities(self, image, vocab, models, config: Sam3Config, regions=None):
        """Per-pixel probabilities float32 (E, H, W) of the vocabulary's entries (its K classes,
        then its B background names); ``regions`` is not used."""
        det = self.detector(models, config)
        probs = det.probabilities(
            image, vocab.names, vocab.owners, config.threshold, config.semantic
        )
        with self._lock:  # finish() is not given the vocabulary: it reads it here
            key = image_key(image)
            self._queries[key] = (list(vocab.names), np.asarray(vocab.owners), len(vocab.classes))
            self._queries.move_to_end(key)
            while len(self._queries) > 8:
                self._queries.popitem(last=False)
        return probs

    def predict(self, probs: torch.Tensor, config: Sam3Config, background: int | None):
        """Labels int64 (H, W): argmax of ``probs`` (C, H, W); pixels whose max is below
        :attr:`Sam3Config.background_threshold` become ``background`` (None: plain argmax)."""
        with torch.inference_mode():
            best, labels = probs.max(dim=0)
            if background is not None:
                labels[best < config.background_threshold] = int(background)
            return labels.to(torch.int64).cpu().numpy()

    def instances(self, image, vocab, models, config: Sam3Config) -> Sam3Instances:
        """Every instance of every class of ``vocab`` (background names' removed)."""
        return self._instances(
            image, (list(vocab.names), vocab.owners, len(vocab.classes)), models, config
        )

    def _instances(self, image, queries, models, config: Sam3Config) -> Sam3Instances:
        names, owners, k = queries
        return self.detector(models, config).instances(
            image,
            names,
            owners,
            num_classes=k,
            threshold=config.threshold,
            mask_threshold=config.mask_threshold,
            dedup_iou=config.dedup_iou,
        )

    def finish(self, image, probs, labels, models, config: Sam3Config, regions=None) -> Finished:
        """``labels`` unchanged, with SAM 3's instances of the vocabulary of the last
        :meth:`probabilities` call on this image behind them (from the same detector
        outputs: no second pass)."""
        with self._lock:
            queries = self._queries.get(image_key(image))
        if queries is None:
            raise RuntimeError("finish() needs probabilities() on the same image first")
        found = self._instances(image, queries, models, config)
        return Finished(labels, found.mask, found.class_index, found.score)

    def mask_scores(self, image, masks, probs, vocab, models, config) -> np.ndarray:
        """Class probabilities float32 (N, K) of bool masks (N, H, W): the mean of the class
        rows of ``probs()`` inside each mask."""
        k, n = len(vocab.classes), masks.shape[0]
        if n == 0:
            return np.zeros((0, k), np.float32)
        p = probs()[:k].cpu().numpy().astype(np.float32)
        flat = masks.reshape(n, -1).astype(np.float32)
        area = np.maximum(flat.sum(1, keepdims=True), 1.0)
        return np.clip(flat @ p.reshape(k, -1).T / area, 0.0, 1.0).astype(np.float32)
