"""Segmenter: composes the stages (dense method, SAM proposals, CLIP scoring, fusion).

``ovseg.segment`` is a one-call front to a cached :class:`Segmenter`.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Sequence
from dataclasses import fields, replace

import numpy as np
import torch

from ovseg.constants import (
    DEFAULT_CLIP,
    DEFAULT_METHOD,
    DEFAULT_SAM,
    REGION_METHOD,
    SAM2_TINY,
    TINY,
)
from ovseg.fusion import fuse, fuse_dense, fuse_labelled, fuse_regions, mask_class_scores
from ovseg.image import load_image
from ovseg.methods.runner import DENSE_METHODS, METHOD_OPTIONS, DenseMethod, needs_sam
from ovseg.models.build import (
    build_clip,
    build_dino,
    build_sam,
    check_sam_spec,
    resolve_device,
)
from ovseg.models.sam2_weights import is_sam2_spec
from ovseg.proposals.grid import GridOptions, automatic_masks
from ovseg.proposals.grid import fused_attention as use_fused_attention
from ovseg.proposals.prompts import make_prompt
from ovseg.proposals.sam import Proposer
from ovseg.proposals.sam2 import Sam2Proposer, is_sam2_model
from ovseg.proposals.sam2_grid import Sam2GridOptions
from ovseg.result import UNLABELED, SegmentationResult
from ovseg.scoring.regions import make_scorer
from ovseg.scoring.vocabulary import Vocabulary
from ovseg.structures import Masks, image_key

METHODS = (*DENSE_METHODS, REGION_METHOD)
REFINES = (None, "masks")
GRID_OPTIONS = tuple(f.name for f in fields(Sam2GridOptions))
SAM2_GRID_OPTIONS = tuple(sorted(set(GRID_OPTIONS) - {f.name for f in fields(GridOptions)}))
_NO_FILTERS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


class Segmenter:
    """Open-vocabulary segmentation with a dense method, SAM proposals and CLIP.

    Args:
        sam: a SAM registry name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``), a checkpoint path, a
            built ``Sam``, ``"tiny-random"``, or None (no prompts, no mask refinement). Built
            on first use: a dense method alone never loads it.
        clip: an open_clip ``"ARCH/TAG"``, ``"ARCH:PATH"`` (also an OpenAI-format state dict),
            ``"hf:ORG/NAME"``, a built model, or ``"tiny-random"`` / ``"hf-tiny-random"``.
        device: ``"cpu"``, ``"cuda"``...; ``None`` picks CUDA when available.
        dino: DINO for ProxyCLIP, CorrCLIP and Trident: ``"dino_vitb8"``, ``"dino_vitb16"``,
            ``"NAME:/path.pth"``, a built module, or ``"tiny-random"``.
        method: the per-pixel method: ``"naclip"`` (default), ``"sclip"``, ``"clearclip"``,
            ``"proxyclip"``, ``"corrclip"`` (each computed exactly as its reference code; CorrCLIP
            uses SAM regions: ``masks=`` per call, else SAM's automatic masks with its settings
            ``CORRCLIP_GRID``), ``"trident"`` (SAM ViT-B's encoder shapes its map and its own SAM
            prompts refine it; needs ``sam``, one encoder pass per image), or ``"sam-clip"``
            (SAM's automatic masks scored by the CLIP region ``scorer``; pixels no mask covers
            stay unlabeled).
        refine: ``None`` (the method's own map) or ``"masks"``: in automatic mode SAM's grid
            masks refine the map, each mask taking the class of highest mean probability inside.
        method_options: overrides of the method's reference settings (``short_side``,
            ``slide_crop``, ``slide_stride``, ``logit_scale``, ``prob_threshold``,
            ``area_threshold``, ``pamr_steps``, ``batch_windows``).
        random_weights: build registered architectures with random weights (timing only; warns).
        templates: prompt-template set name or list (see :mod:`ovseg.scoring.vocabulary`).
        scorer: CLIP region scorer of the ``"sam-clip"`` method and of grounding: ``"dense"``,
            ``"crop"`` or ``"both"`` (see :mod:`ovseg.scoring.regions`), or a built scorer
            (``CropScorer(backend, margin=0.2)``: its options validated by its constructor).
        score_threshold: default minimum class probability for a mask to label pixels.
        grid: automatic-grid options (:class:`~ovseg.proposals.grid.GridOptions`; for SAM 2
            :class:`~ovseg.proposals.sam2_grid.Sam2GridOptions`, the default with a SAM 2 model,
            with Meta's SAM 2 defaults). The tiny random SAMs come with the quality filters off
            (their predicted IoUs are meaningless).
        fused_attention: SAM's encoder attention through fused ``scaled_dot_product_attention``.
        scorer_options: passed to the scorer (e.g. ``margin``, ``fill`` for ``"crop"``).
    """

    def __init__(
        self,
        sam=DEFAULT_SAM,
        clip=DEFAULT_CLIP,
        device=None,
        *,
        dino=None,
        method: str = DEFAULT_METHOD,
        refine: str | None = None,
        method_options: dict | None = None,
        random_weights: bool = False,
        templates: str | Sequence[str] = "imagenet",
        scorer="dense",
        score_threshold: float = 0.0,
        grid: GridOptions | None = None,
        fused_attention: bool = True,
        **scorer_options,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if refine not in REFINES:
            raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
        if sam is None and (method == REGION_METHOD or refine or needs_sam(method)):
            raise ValueError(f"method={method!r} with refine={refine!r} needs a SAM model")
        if needs_sam(method) and is_sam2_spec(sam):
            raise ValueError(
                f"method {method!r} reads SAM 1's ViT encoder: use sam='vit_b' (or vit_l, vit_h), "
                "not a SAM 2 model"
            )
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if grid is not None and not isinstance(grid, GridOptions):
            raise TypeError(f"grid must be a GridOptions, got {type(grid).__name__}")
        Vocabulary(["x"], templates)  # validates the templates now
        check_sam_spec(sam)  # a bad name or path fails now, even though SAM loads on first use
        self.lock = threading.RLock()
        self.device = resolve_device(device)
        self.method, self.refine, self.templates = method, refine, templates
        self.score_threshold = score_threshold
        self.random_weights, self.fused_attention = random_weights, fused_attention
        self.clip = build_clip(clip, self.device, random_weights=random_weights)
        if isinstance(scorer, str):
            self.scorer = make_scorer(scorer, self.clip, **scorer_options)
        elif callable(getattr(scorer, "embed", None)):
            if scorer_options:
                raise ValueError(
                    f"scorer options {sorted(scorer_options)} apply to a scorer given by name; "
                    "this scorer object is already built"
                )
            self.scorer = scorer
        else:
            raise TypeError(
                "scorer must be 'dense', 'crop', 'both' or a scorer object with "
                f"embed(image, masks), got {type(scorer).__name__}"
            )
        self.dino = build_dino(dino, self.device, random_weights=random_weights)
        self.dense = (
            DenseMethod(method, self.clip, self.dino, **(method_options or {}))
            if method in DENSE_METHODS
            else None
        )
        sam2 = is_sam2_spec(sam)
        if isinstance(grid, Sam2GridOptions) and not sam2:
            raise ValueError("Sam2GridOptions need a SAM 2 model; use GridOptions with SAM 1")
        self._tiny_grid = grid is None and isinstance(sam, str) and sam in (TINY, SAM2_TINY)
        default = Sam2GridOptions() if sam2 else GridOptions()
        self.grid = replace(default, **_NO_FILTERS) if self._tiny_grid else (grid or default)
        self._sam_spec = sam
        self._proposer: Proposer | Sam2Proposer | None = None
        if method == REGION_METHOD or refine:
            self._build_proposer()
        self._image: np.ndarray | None = None
        self._dense_scorer = None
        self._probs_cache: tuple | None = None
        self._regions_cache: tuple | None = None

    # -- models -----------------------------------------------------------------------------
    @property
    def has_sam(self) -> bool:
        return self._sam_spec is not None

    def _build_proposer(self) -> Proposer | Sam2Proposer:
        if self._proposer is None:
            if self._sam_spec is None:
                raise ValueError("prompts and mask refinement need a SAM model: Segmenter(sam=...)")
            if self._tiny_grid:
                warnings.warn(
                    "ovseg: the tiny random SAM comes with the grid's quality filters off "
                    "(pred_iou_thresh=0, stability_score_thresh=0): its scores are meaningless",
                    UserWarning,
                    stacklevel=3,
                )
            model = build_sam(self._sam_spec, self.device, random_weights=self.random_weights)
            if is_sam2_model(model):
                self._proposer = Sam2Proposer(model)
            else:
                if self.fused_attention:
                    use_fused_attention(model)
                keep = self.dense is not None and self.dense.uses_sam  # Trident reads SAM's
                self._proposer = Proposer(model, keep_block_input=keep)  # last encoder block
        return self._proposer

    @property
    def proposer(self) -> Proposer | Sam2Proposer:
        """The SAM proposer, built on first use."""
        with self.lock:
            return self._build_proposer()

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

    def segment_video(self, frames, classes, **options):
        """One result per frame of a video, file, folder, camera or image iterable, each
        instance segment carrying a ``track_id``: see :func:`ovseg.video.segment_video`."""
        from ovseg.video.stream import segment_video

        return segment_video(self, frames, classes, **options)

    # -- image ------------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._image

    def set_image(self, image) -> np.ndarray:
        """Load ``image`` (path, PIL image, array); with a SAM model, compute its embedding
        (cached by content). Returns the RGB uint8 (H, W, 3) array."""
        array = load_image(image)
        with self.lock:
            if self.has_sam:
                self.proposer.set_image(array)
            self._image = array
        return array

    def _use(self, image, sam: bool = True) -> np.ndarray:
        if image is None:
            array = self.image
            if sam and self.has_sam:
                self.proposer.set_image(array)  # a no-op when it is the image already set
            return array
        if sam and self.has_sam:
            return self.set_image(image)
        self._image = load_image(image)
        return self._image

    def vocabulary(self, classes, background=(), templates=None) -> Vocabulary:
        return Vocabulary(classes, self.templates if templates is None else templates, background)

    # -- stages -----------------------------------------------------------------------------
    @torch.inference_mode()
    def propose(
        self, image=None, *, points=None, point_labels=None, boxes=None, mask_input=None,
        scribble=None, **grid_options,
    ) -> Masks:  # fmt: skip
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
                        f"grid options {sorted(grid_options)} apply to automatic mode only, "
                        "not with prompts"
                    )
                return self.proposer.predict(prompt)
            return automatic_masks(self.proposer, self._grid(grid_options))

    def _grid(self, grid_options: dict) -> GridOptions:
        unknown = sorted(set(grid_options) - set(GRID_OPTIONS))
        if unknown:
            raise ValueError(f"unknown grid option(s) {unknown}; known: {', '.join(GRID_OPTIONS)}")
        sam2_only = sorted(set(grid_options) & set(SAM2_GRID_OPTIONS))
        if sam2_only and not isinstance(self.grid, Sam2GridOptions):
            raise ValueError(
                f"grid option(s) {sam2_only} apply to SAM 2's grid (Sam2GridOptions) only"
            )
        return replace(self.grid, **grid_options)

    def region_map(self, array: np.ndarray, masks=None) -> np.ndarray | None:
        """The region id map of a method that uses regions (CorrCLIP): from ``masks`` (bool
        (N, H, W) or an int id map), else SAM's automatic masks with the method's settings;
        None for other methods (which take no ``masks``)."""
        from ovseg.methods.regions import region_id_map

        if self.dense is None or not self.dense.uses_regions:
            if masks is not None:
                raise ValueError(f"masks= is for a method that uses regions, not {self.method!r}")
            return None
        if masks is not None:
            return region_id_map(masks, array.shape[:2])
        if not self.has_sam:
            raise ValueError(
                f"method {self.method!r} needs regions: pass masks= (bool (N, H, W) or an int "
                "id map, 0 = unsegmented) or build the Segmenter with a SAM model"
            )
        from ovseg.methods.corrclip import CORRCLIP_GRID

        proposer = self.proposer
        proposer.set_image(array)
        options = GridOptions(**CORRCLIP_GRID)
        if isinstance(proposer, Sam2Proposer):  # SAM 2's generator, one mask per point
            options = Sam2GridOptions(**CORRCLIP_GRID, multimask_output=False)
        key = (image_key(array), options)
        if self._regions_cache is None or self._regions_cache[0] != key:
            ids = region_id_map(automatic_masks(proposer, options).masks, array.shape[:2])
            self._regions_cache = (key, ids)
        return self._regions_cache[1]

    def _dense_probs(
        self, array: np.ndarray, vocab: Vocabulary, options: dict, regions=None
    ) -> torch.Tensor:
        """Probabilities (K + B, H, W) of the classes then the background names; the last
        image's are cached per (vocabulary, options, regions)."""
        if self.dense is None:
            raise ValueError(
                f"method {self.method!r} has no per-pixel probabilities; choose one of "
                f"{DENSE_METHODS}"
            )
        config = self.dense.config(**options)
        key = (image_key(array), tuple(vocab.names), tuple(vocab.owners), vocab.templates, config,
               None if regions is None else image_key(regions))  # fmt: skip
        if self._probs_cache is not None and self._probs_cache[0] == key:
            return self._probs_cache[1]
        text = vocab.text_embeddings(self.clip)
        entries = len(vocab.classes) + len(vocab.background)
        sam = self.proposer if self.dense.uses_sam else None
        probs = self.dense.probabilities(
            array, text, vocab.owners.tolist(), entries, config, regions=regions, sam=sam
        )
        self._probs_cache = (key, probs)
        return probs

    def pixel_probabilities(
        self, image, classes, *, masks=None, background=(), templates=None, **options
    ) -> np.ndarray:
        """Class probabilities float32 (K, H, W) at the input size, from the dense method.

        ``softmax(logit_scale * cosine)`` over every query (each synonym of each class, and the
        ``background`` names), then per class the max over its synonyms; NACLIP's PAMR is
        included; Trident's map is the one before its SAM refinement; CorrCLIP's the one before
        its vote, with the regions of ``masks`` (bool (N, H, W) or an int id map, 0 =
        unsegmented) or SAM's automatic ones. ``options`` override the method's settings (see
        ``method_options``).
        """
        vocab = self.vocabulary(classes, background, templates)
        DenseMethod.check_options(options)
        with self.lock:
            array = self._use(image, sam=False)
            regions = self.region_map(array, masks)
            probs = self._dense_probs(array, vocab, options, regions)
        return probs[: len(vocab)].cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def score(
        self, masks: Masks, classes, image=None, *, background=(), templates=None
    ) -> np.ndarray:
        """Class probabilities float32 (N, K) of each mask: the region scorer's for
        ``"sam-clip"``, else the mean of the method's pixel probabilities inside the mask."""
        vocab = self.vocabulary(classes, background, templates)
        with self.lock:
            return self._mask_scores(masks, vocab, self._use(image), {})

    def _mask_scores(self, masks: Masks, vocab: Vocabulary, array: np.ndarray, options):
        if masks.shape != array.shape[:2]:
            raise ValueError(f"masks are {masks.shape}, the image is {array.shape[:2]}")
        if len(masks) == 0:
            return np.zeros((0, len(vocab)), np.float32)
        if self.dense is None:
            return vocab.probabilities(self.scorer.embed(array, masks), self.clip)
        probs = self._dense_probs(array, vocab, options)[: len(vocab)].cpu().numpy()
        return mask_class_scores(masks.masks, probs)

    def _labels(self, image: np.ndarray, probs: torch.Tensor, k: int, options: dict, regions=None):
        """The method's prediction rule (:func:`~ovseg.methods.dense.predict_labels`: SCLIP's
        area rule, argmax, probability threshold) with ovseg's vocabulary: the background names
        act as one background class (their best probability), and it becomes UNLABELED. Then
        the method's own SAM refinement, if it has one. Returns ``(labels, refinement)``."""
        from ovseg.methods.dense import predict_labels

        if probs.shape[0] > k:
            background = probs[k:].amax(0, keepdim=True)
        else:
            background = probs.new_zeros((1, *probs.shape[1:]))
        config = self.dense.config(**options)
        full = torch.cat([probs[:k], background])
        labels = predict_labels(full, config, background_class=k)
        refinement = None
        if self.dense.uses_sam:
            refinement = self.dense.refine(image, full, labels, config, self.proposer)
            labels = torch.from_numpy(refinement.labels)
        labels = self.dense.refine_labels(labels.cpu().numpy().astype(np.int32), regions)
        labels[labels == k] = UNLABELED
        return labels, refinement

    def segment(
        self, image, classes, *, points=None, point_labels=None, boxes=None, mask_input=None,
        scribble=None, masks=None, background=(), templates=None,
        score_threshold: float | None = None, **options,
    ) -> SegmentationResult:  # fmt: skip
        """Segment ``image`` into ``classes``: see :func:`ovseg.segment`."""
        vocab = self.vocabulary(classes, background, templates)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {threshold}")
        grid_options = {k: v for k, v in options.items() if k in GRID_OPTIONS}
        method_options = {k: v for k, v in options.items() if k not in GRID_OPTIONS}
        unknown = sorted(set(method_options) - set(METHOD_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown}; grid options: {', '.join(GRID_OPTIONS)}; method "
                f"options: {', '.join(METHOD_OPTIONS)}"
            )
        if method_options and self.dense is None:
            raise ValueError(f"method options {sorted(method_options)} need a dense method")
        prompt = dict(points=points, point_labels=point_labels, boxes=boxes,
                      mask_input=mask_input, scribble=scribble)  # fmt: skip
        prompted = any(v is not None for v in prompt.values())
        with self.lock:
            use_sam = prompted or self.dense is None or self.refine is not None
            array = self._use(image, sam=use_sam)
            if prompted and grid_options:
                raise ValueError(
                    f"grid options {sorted(grid_options)} apply to automatic mode only, "
                    "not with prompts"
                )
            self._grid(grid_options)  # validate before any work
            if grid_options and not use_sam:
                raise ValueError(
                    f"grid options {sorted(grid_options)} apply to SAM's automatic grid: use "
                    "method='sam-clip' or refine='masks'"
                )
            regions = self.region_map(array, masks)
            masks = self.propose(**prompt, **grid_options) if use_sam else None
            if self.dense is None:
                scores = self._mask_scores(masks, vocab, array, {})
                return fuse(masks.masks, scores, vocab.classes, score_threshold=threshold,
                            image=array, proposal_scores=masks.scores)  # fmt: skip
            return self.label_regions(
                array,
                vocab,
                None if masks is None else masks.masks,
                None if masks is None else masks.scores,
                score_threshold=threshold,
                regions=regions,
                **method_options,
            )

    def label_regions(
        self,
        image: np.ndarray,
        vocab: Vocabulary,
        masks: np.ndarray | None = None,
        proposal_scores: np.ndarray | None = None,
        *,
        score_threshold: float = 0.0,
        regions: np.ndarray | None = None,
        **method_options,
    ) -> SegmentationResult:
        """The dense method's map of ``image`` (RGB uint8) with ``masks`` (bool (N, H, W))
        painted in the class of highest mean probability inside each (see
        :func:`ovseg.fusion.fuse_dense`). Dense methods only. A method that uses regions
        (CorrCLIP) takes their id map ``regions`` and, without ``masks``, returns its regions
        as the segments (:func:`ovseg.fusion.fuse_regions`); one that refines with SAM itself
        (Trident) returns the SAM masks it kept (:func:`ovseg.fusion.fuse_labelled`)."""
        k = len(vocab)
        with self.lock:
            probs = self._dense_probs(image, vocab, method_options, regions)
            labels, refinement = self._labels(image, probs, k, method_options, regions)
        if regions is not None and masks is None:
            return fuse_regions(labels, probs[:k].cpu().numpy(), vocab.classes,
                                regions, image=image)  # fmt: skip
        if refinement is not None and masks is None:
            own = np.take_along_axis(refinement.scores, np.clip(labels, 0, k)[None], 0)[0]
            dense = probs[:k].cpu().numpy()
            coarse = np.take_along_axis(dense, np.clip(labels, 0, k - 1)[None], 0)[0]
            confidence = np.where(labels == UNLABELED, 0.0, np.where(own > 0, own, coarse))
            return fuse_labelled(labels, np.clip(confidence, 0.0, 1.0), vocab.classes,
                                 masks=refinement.masks, mask_classes=refinement.mask_classes,
                                 proposal_scores=refinement.mask_scores, image=image)  # fmt: skip
        return fuse_dense(
            labels,
            probs[: len(vocab)].cpu().numpy(),
            vocab.classes,
            masks=masks,
            proposal_scores=proposal_scores,
            score_threshold=score_threshold,
            image=image,
        )


_DEFAULTS: dict[tuple, Segmenter] = {}
_DEFAULTS_LOCK = threading.Lock()
_INIT_OPTIONS = tuple(
    n
    for n in inspect.signature(Segmenter.__init__).parameters
    if n not in ("self", "scorer_options")
)


def default_segmenter(sam=DEFAULT_SAM, clip=DEFAULT_CLIP, device=None, **options) -> Segmenter:
    """A Segmenter cached per model choice and construction options (when they are hashable)."""
    key = (sam, clip, str(resolve_device(device)), tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:
        return Segmenter(sam, clip, device, **options)
    with _DEFAULTS_LOCK:
        if key not in _DEFAULTS:
            _DEFAULTS[key] = Segmenter(sam, clip, device, **options)
        return _DEFAULTS[key]


def segment(
    image, classes: Sequence[str], *, quality: str | None = None, device=None, **options
) -> SegmentationResult:
    """Segment an image into an open vocabulary.

    Args:
        image: a path, a ``PIL.Image``, or a uint8 array (H, W, 3) or (H, W).
        classes: K distinct non-blank names; ``"road; street"`` gives synonyms.
        quality: ``"fast"`` (NACLIP), ``"balanced"`` (Trident) or ``"best"`` (CorrCLIP): a method
            with the models of its published numbers (:mod:`ovseg.models.presets`). With no
            ``sam``, ``clip``, ``dino`` or ``method`` given, ``"best"``; models or a method
            given take precedence (and without ``quality`` the plain defaults fill the rest).
        device: ``"cpu"``, ``"cuda"``...; the Segmenter is cached per models and options.
        **options: ``sam``, ``clip``, ``dino``, ``method`` (see :class:`Segmenter`), any other
            :class:`Segmenter` option (``refine``, ``scorer``, ``random_weights``, ...), and
            per-call options: ``points`` (P, 2) ``(x, y)`` pixels, ``point_labels`` (P,) 1/0,
            ``boxes`` (B, 4) XYXY pixels, ``mask_input`` (H, W) rough mask, ``scribble`` (H, W)
            strokes, ``masks`` (regions of CorrCLIP), ``background`` names, ``templates``,
            ``score_threshold``, grid options and method options.

    Returns:
        A :class:`~ovseg.result.SegmentationResult`: ``label_map`` int32 (H, W) with class
        indices or ``ovseg.UNLABELED`` (-1), ``confidence`` float32 (H, W), ``segments``.
    """
    from ovseg.models.presets import MODEL_KEYS, resolve_models
    from ovseg.scoring.vocabulary import validate_classes

    validate_classes(classes)
    models = resolve_models(quality, {k: options.pop(k) for k in MODEL_KEYS if k in options})
    sam, clip = models.pop("sam"), models.pop("clip")
    init = {k: options.pop(k) for k in list(options) if k in _INIT_OPTIONS and k != "templates"}
    init.update(models)
    scorer_keys = {"margin", "fill", "batch_size", "window", "stride"}
    if init["method"] == REGION_METHOD:
        scorer_keys.add("short_side")  # a dense method takes short_side as a method option
    init.update({k: options.pop(k) for k in list(options) if k in scorer_keys})
    seg = default_segmenter(sam, clip, device, **init)
    return seg.segment(image, classes, **options)
