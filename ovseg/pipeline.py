"""Segmenter: SAM proposals -> CLIP region scores -> fused semantic map.

``ovseg.segment`` is a one-call front to a cached default :class:`Segmenter`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ovseg.constants import DEFAULT_CLIP, DEFAULT_SAM
from ovseg.fusion import fuse
from ovseg.image import load_image
from ovseg.models.build import build_clip, build_sam, resolve_device
from ovseg.proposals.grid import GridOptions, automatic_masks
from ovseg.proposals.grid import fused_attention as use_fused_attention
from ovseg.proposals.prompts import make_prompt
from ovseg.proposals.sam import Proposer
from ovseg.result import SegmentationResult
from ovseg.scoring.regions import make_scorer
from ovseg.scoring.vocabulary import Vocabulary
from ovseg.structures import Masks


class Segmenter:
    """Open-vocabulary segmentation with one SAM and one CLIP model.

    Args:
        sam: a SAM registry name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``), a checkpoint path, a
            built ``Sam``, or ``"tiny-random"``.
        clip: an open_clip ``"ARCH/TAG"``, ``"ARCH:PATH"``, ``"hf:ORG/NAME"``, a built model, or
            ``"tiny-random"`` / ``"hf-tiny-random"``.
        device: ``"cpu"``, ``"cuda"``...; ``None`` picks CUDA when available.
        random_weights: build registered architectures with random weights (timing only; warns;
            labels are meaningless). ``"tiny-random"`` models are random too.
        templates: prompt-template set name or list (see :mod:`ovseg.scoring.vocabulary`).
        scorer: ``"dense"`` (default: one CLIP pass per image, features pooled in each mask),
            ``"crop"`` (one CLIP pass per masked crop) or ``"both"``; see :mod:`ovseg.scoring`.
        score_threshold: default minimum class probability for a mask to label pixels.
        grid: automatic-grid options (:class:`~ovseg.proposals.grid.GridOptions`).
        fused_attention: run SAM's image-encoder attention through PyTorch's fused
            ``scaled_dot_product_attention`` (same arithmetic up to float rounding, faster).
        scorer_options: passed to the scorer (e.g. ``margin``, ``fill`` for ``"crop"``).
    """

    def __init__(
        self,
        sam=DEFAULT_SAM,
        clip=DEFAULT_CLIP,
        device=None,
        *,
        random_weights: bool = False,
        templates: str | Sequence[str] = "imagenet",
        scorer: str = "dense",
        score_threshold: float = 0.0,
        grid: GridOptions | None = None,
        fused_attention: bool = True,
        **scorer_options,
    ):
        self.device = resolve_device(device)
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        sam_model = build_sam(sam, self.device, random_weights=random_weights)
        if fused_attention:
            use_fused_attention(sam_model)
        self.proposer = Proposer(sam_model)
        self.clip = build_clip(clip, self.device, random_weights=random_weights)
        self.scorer = make_scorer(scorer, self.clip, **scorer_options)
        self.templates = templates
        self.score_threshold = score_threshold
        self.grid = grid or GridOptions()
        self._image: np.ndarray | None = None
        self._dense_scorer = None
        self.lock = threading.RLock()

    @property
    def dense_scorer(self):
        """The dense region scorer (the segmenter's own, or one built once for heatmaps)."""
        from ovseg.scoring.regions import DenseScorer, EnsembleScorer

        if isinstance(self.scorer, DenseScorer):
            return self.scorer
        if isinstance(self.scorer, EnsembleScorer):
            return self.scorer.dense
        if self._dense_scorer is None:
            self._dense_scorer = DenseScorer(self.clip)
        return self._dense_scorer

    def ground(self, image, phrase, **options):
        """Regions of ``image`` that a referring phrase names: see :func:`ovseg.ground`."""
        from ovseg.grounding.core import ground

        return ground(image, phrase, segmenter=self, **options)

    def heatmap(self, image, phrase, **options):
        """Similarity of a phrase over the image, float32 (H, W) in [0, 1]: see
        :func:`ovseg.grounding.heatmap`."""
        from ovseg.grounding.core import heatmap

        return heatmap(image, phrase, segmenter=self, **options)

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._image

    def set_image(self, image) -> np.ndarray:
        """Load ``image`` (path, PIL image, array) and compute its SAM embedding (cached by
        content). Returns the RGB uint8 (H, W, 3) array."""
        array = load_image(image)
        with self.lock:
            self.proposer.set_image(array)
            self._image = array
        return array

    def _use(self, image) -> np.ndarray:
        return self.image if image is None else self.set_image(image)

    def vocabulary(self, classes, background=(), templates=None) -> Vocabulary:
        return Vocabulary(classes, self.templates if templates is None else templates, background)

    @torch.inference_mode()
    def propose(
        self,
        image=None,
        *,
        points=None,
        point_labels=None,
        boxes=None,
        mask_input=None,
        scribble=None,
        **grid_options,
    ) -> Masks:
        """Class-agnostic masks of ``image`` (or of the image already set).

        With any prompt, the prompted object(s); without, the automatic grid
        (``grid_options`` override fields of :class:`~ovseg.proposals.grid.GridOptions`).
        """
        with self.lock:
            array = self._use(image)
            prompt = make_prompt(array.shape[:2], points, point_labels, boxes, mask_input, scribble)
            if not prompt.is_empty:
                if grid_options:
                    raise ValueError(
                        f"grid options {sorted(grid_options)} apply to automatic "
                        "mode only, not with prompts"
                    )
                return self.proposer.predict(prompt)
            try:
                options = replace(self.grid, **grid_options)
            except TypeError as e:
                raise ValueError(
                    f"unknown grid option in {sorted(grid_options)}; known: "
                    f"{sorted(GridOptions.__dataclass_fields__)}"
                ) from e
            return automatic_masks(self.proposer, options)

    @torch.inference_mode()
    def score(
        self, masks: Masks, classes, image=None, *, background=(), templates=None
    ) -> np.ndarray:
        """Class probabilities float32 (N, K) of each mask (see ``Vocabulary.probabilities``)."""
        vocab = self.vocabulary(classes, background, templates)
        with self.lock:
            return self._probabilities(masks, vocab, self._use(image))

    def _probabilities(self, masks: Masks, vocab: Vocabulary, array: np.ndarray) -> np.ndarray:
        if masks.shape != array.shape[:2]:
            raise ValueError(f"masks are {masks.shape}, the image is {array.shape[:2]}")
        if len(masks) == 0:
            return np.zeros((0, len(vocab)), np.float32)
        return vocab.probabilities(self.scorer.embed(array, masks), self.clip)

    def segment(
        self,
        image,
        classes,
        *,
        points=None,
        point_labels=None,
        boxes=None,
        mask_input=None,
        scribble=None,
        background=(),
        templates=None,
        score_threshold: float | None = None,
        **grid_options,
    ) -> SegmentationResult:
        """Segment ``image`` into ``classes``: see :func:`ovseg.segment`."""
        vocab = self.vocabulary(classes, background, templates)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {threshold}")
        with self.lock:
            array = self._use(image)
            masks = self.propose(
                points=points,
                point_labels=point_labels,
                boxes=boxes,
                mask_input=mask_input,
                scribble=scribble,
                **grid_options,
            )
            scores = self._probabilities(masks, vocab, array)
        return fuse(
            masks.masks,
            scores,
            vocab.classes,
            score_threshold=threshold,
            image=array,
            proposal_scores=masks.scores,
        )


_DEFAULTS: dict[tuple, Segmenter] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_segmenter(
    sam=DEFAULT_SAM, clip=DEFAULT_CLIP, device=None, random_weights: bool = False
) -> Segmenter:
    """A Segmenter cached per (sam, clip, device, random_weights) for named models."""
    key = (sam, clip, str(resolve_device(device)), random_weights)
    try:
        hash(key)
    except TypeError:
        return Segmenter(sam, clip, device, random_weights=random_weights)
    with _DEFAULTS_LOCK:
        if key not in _DEFAULTS:
            _DEFAULTS[key] = Segmenter(sam, clip, device, random_weights=random_weights)
        return _DEFAULTS[key]


def segment(
    image,
    classes: Sequence[str],
    *,
    sam=DEFAULT_SAM,
    clip=DEFAULT_CLIP,
    device=None,
    random_weights: bool = False,
    **options,
) -> SegmentationResult:
    """Segment an image into an open vocabulary.

    Args:
        image: a path, a ``PIL.Image``, or a uint8 array (H, W, 3) or (H, W).
        classes: K distinct non-blank names; ``"road; street"`` gives synonyms.
        sam, clip, device, random_weights: models (see :class:`Segmenter`); cached across calls.
        **options: ``points`` (P, 2) ``(x, y)`` pixels, ``point_labels`` (P,) 1/0, ``boxes``
            (B, 4) XYXY pixels, ``mask_input`` (H, W) rough mask, ``scribble`` (H, W) strokes,
            ``background`` names, ``templates``, ``score_threshold``, and grid options. With no
            prompt, proposals come from the automatic grid.

    Returns:
        A :class:`~ovseg.result.SegmentationResult`: ``label_map`` int32 (H, W) with class
        indices or ``ovseg.UNLABELED`` (-1), ``confidence`` float32 (H, W), ``segments``.
    """
    from ovseg.scoring.vocabulary import validate_classes

    validate_classes(classes)
    return default_segmenter(sam, clip, device, random_weights).segment(image, classes, **options)
