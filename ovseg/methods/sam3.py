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

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ovseg.methods.config import MethodConfig, int_at_least, real_in
from ovseg.methods.protocol import Finished, Method
from ovseg.proposals.sam3 import Sam3Bundle, Sam3Instances
from ovseg.proposals.sam3_detector import Sam3Detector
from ovseg.structures import image_key

__all__ = ["Sam3", "Sam3Config", "check_sam3_family"]


@dataclass(frozen=True)
class Sam3Config(MethodConfig):
    """Options of ``method="sam3"``.

    Attributes:
        score_threshold: the option every method has (prompted objects' minimum class
            probability); ``refine`` must stay None (SAM 3's instances are its masks; it has
            no automatic grid); ``dataset`` changes nothing.
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

    threshold: float = 0.5
    mask_threshold: float = 0.5
    prob_threshold: float | None = None
    semantic: bool = True
    dedup_iou: float = 0.5
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine is not None:
            raise ValueError(
                f"refine={self.refine!r} is not an option of method 'sam3': its instances are "
                "its masks (SAM 3 has no automatic grid); leave refine=None"
            )
        for name in ("threshold", "mask_threshold", "dedup_iou"):
            real_in(self, name, 0.0, 1.0)
        if self.prob_threshold is not None:
            real_in(self, "prob_threshold", 0.0, 1.0)
        if not isinstance(self.semantic, bool):
            raise ValueError(f"semantic must be True or False, got {self.semantic!r}")
        int_at_least(self, "batch_size", 1)

    @property
    def background_threshold(self) -> float:
        """``prob_threshold``, or ``threshold * mask_threshold`` when it is None."""
        if self.prob_threshold is not None:
            return float(self.prob_threshold)
        return float(self.threshold) * float(self.mask_threshold)


def check_sam3_family(method: str, specs, flags: bool = False) -> None:
    """Refuse a SAM of another family than SAM 3 for ``method`` (``flags``: name the CLI flag)."""
    family = specs.get("sam_family")
    if family not in (None, "sam3"):
        where = "--sam" if flags else "Segmenter(sam=...)"
        raise ValueError(
            f"method {method!r} needs a SAM 3 model ({where}: 'sam3', a Hugging Face id such "
            f"as facebook/sam3, a local folder or 'sam3-tiny-random'), got a {family} model"
        )


class Sam3(Method):
    """SAM 3 as a segmentation method (see the module docstring).

    Args:
        **options: fields of :class:`Sam3Config`, validated now.
    """

    name = "sam3"
    needs = frozenset({"sam"})
    Config = Sam3Config
    hints = {"sam": "sam3"}
    finds_instances = True

    def __init__(self, **options):
        self._detectors: dict[int, Sam3Detector] = {}
        self._queries: OrderedDict[str, tuple] = OrderedDict()  # image -> its last vocabulary
        self._lock = threading.Lock()
        super().__init__(**options)

    def clear_cache(self) -> None:
        with self._lock:
            self._queries.clear()
            for det in self._detectors.values():
                det.clear_cache()

    @classmethod
    def check_specs(cls, specs, flags: bool = False) -> None:
        """Refuse a missing SAM, or one of another family (SAM 1, SAM 2)."""
        super().check_specs(specs, flags)
        check_sam3_family(cls.name, specs, flags)

    def check_models(self, models) -> None:
        if not isinstance(models.sam, Sam3Bundle):
            raise ValueError(
                f"method 'sam3' needs a SAM 3 model (sam='sam3' or 'sam3-tiny-random'), got "
                f"{type(models.sam).__name__}"
            )

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
