"""Segmenter: a method (:mod:`ovseg.methods`) with its models, SAM prompts, and fusion.

Every method reaches the user through the same steps of the method protocol
(:mod:`ovseg.methods.protocol`): its per-pixel probabilities, its prediction rule, its own
finishing step; then the masks of prompts (or of SAM's automatic grid with ``refine="masks"``)
are painted over the map, each with the class the method scores highest for it.
``ovseg.segment`` (:mod:`ovseg.api`) is a one-call front to a cached :class:`Segmenter`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from ovseg.constants import DEFAULT_CLIP, DEFAULT_METHOD, DEFAULT_SAM
from ovseg.fusion import compose
from ovseg.image import load_image
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.protocol import Finished, Method, label_probability, with_background
from ovseg.methods.registry import method_class
from ovseg.models.bundle import GRID_OPTIONS, Models, split_options
from ovseg.proposals.grid import GridOptions
from ovseg.proposals.prompts import make_prompt
from ovseg.result import UNLABELED, SegmentationResult
from ovseg.scoring.vocabulary import Vocabulary
from ovseg.structures import Masks, image_key

__all__ = ["Segmenter"]


class Segmenter:
    """Open-vocabulary segmentation with one method, its models, and SAM prompts.

    Args:
        sam: a SAM registry name (``"vit_b"``, ``"sam2.1_hiera_tiny"``...), ``"NAME:/path"``,
            a checkpoint path, a hub id, a built model, ``"tiny-random"`` /
            ``"sam2-tiny-random"``; SAM 3: ``"sam3"``, ``"facebook/sam3"``, a local folder,
            a built model, ``"sam3-tiny-random"``; or None (no prompts). Built on first use.
        clip: an open_clip ``"ARCH/TAG"``, ``"ARCH:PATH"``, ``"hf:ORG/NAME"``, a built model,
            or ``"tiny-random"`` / ``"hf-tiny-random"``.
        device: ``"cpu"``, ``"cuda"``...; ``None`` picks CUDA when available.
        dino: DINO for ProxyCLIP, Trident and CorrCLIP: ``"dino_vitb8"``, ``"dino_vitb16"``,
            ``"NAME:/path.pth"``, a built module, or ``"tiny-random"``.
        vfm: CorrCLIPv2's vision foundation model (:func:`ovseg.models.vfm.build_vfm`).
        bank: CorrCLIPv2's memory bank folder (``ovseg bank build``).
        aux_clip: CorrCLIPv2's auxiliary CLIP, of the bank's second store (``"ViT-B-16/dfn2b"``).
        method: a registered method name (:func:`ovseg.methods.registry.method_names`;
            ``"naclip"`` by default) or a built :class:`~ovseg.methods.protocol.Method`.
        random_weights: build registered architectures with random weights (timing only; warns).
        templates: prompt-template set name or list (see :mod:`ovseg.scoring.vocabulary`).
        grid: automatic-grid options (:class:`~ovseg.proposals.grid.GridOptions`, or
            :class:`~ovseg.proposals.sam2_grid.Sam2GridOptions` with a SAM 2 model).
        fused_attention: SAM's encoder attention through fused ``scaled_dot_product_attention``.
        **options: the method's options (the fields of its config, e.g. ``short_side``,
            ``prob_threshold``, ``coarse_thresh``, ``refine``, ``score_threshold``, ``scorer``)
            and grid options (``points_per_side``...). Every call may override them under the
            same names.
    """

    def __init__(
        self,
        sam=DEFAULT_SAM,
        clip=DEFAULT_CLIP,
        device=None,
        *,
        dino=None,
        vfm=None,
        bank=None,
        aux_clip=None,
        method: str | Method = DEFAULT_METHOD,
        random_weights: bool = False,
        templates: str | Sequence[str] = "imagenet",
        grid: GridOptions | None = None,
        fused_attention: bool = True,
        **options,
    ):
        cls = type(method) if isinstance(method, Method) else method_class(method)
        method_options, grid_options = split_options(cls, options)
        if isinstance(method, Method) and method_options:
            raise ValueError(
                f"options {sorted(method_options)} go with a method given by name; this "
                "method object is already built"
            )
        Vocabulary(["x"], templates)  # validates the templates now
        self.method = method if isinstance(method, Method) else cls(**method_options)
        self.lock = threading.RLock()
        self.templates = templates
        self.models = Models(
            sam=sam, clip=clip, dino=dino, vfm=vfm, bank=bank, aux_clip=aux_clip, device=device,
            random_weights=random_weights, grid=grid, fused_attention=fused_attention,
        )  # fmt: skip
        cls.check_specs({**self.models.specs, "sam_family": self.models.sam_family})
        if self.method.config().refine and not self.models.has_sam:
            raise ValueError(f"refine={self.method.config().refine!r} needs a SAM model")
        self.models.grid = self.models.grid_options(**grid_options)
        eager = sorted(self.method.needs & {"clip", "dino", "vfm"})
        if "sam" in self.method.needs or self.method.config().refine:
            eager.append("proposer")
        for kind in eager:  # a missing checkpoint fails now, not on the first image
            getattr(self.models, kind)
        self.method.check_models(self.models)
        self._image: np.ndarray | None = None
        self._probs_cache: tuple | None = None

    def __repr__(self) -> str:
        specs = ", ".join(f"{k}={v!r}" for k, v in self.models.specs.items() if v is not None)
        return f"Segmenter({specs}, method={self.method!r}, device={str(self.device)!r})"

    # -- models -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def clip(self):
        """The CLIP backend (built on first use when the method does not need it)."""
        return self.models.clip

    @property
    def dino(self):
        return self.models.dino

    @property
    def has_sam(self) -> bool:
        return self.models.has_sam

    @property
    def grid(self) -> GridOptions:
        """The automatic grid's options."""
        return self.models.grid

    @property
    def proposer(self):
        """The SAM proposer, built on first use."""
        with self.lock:
            if not self.has_sam:
                raise ValueError("prompts and mask refinement need a SAM model: Segmenter(sam=...)")
            return self.models.proposer

    def config(self, dataset: str | None = None, **options):
        """The method's settings for a call: its reference settings on ``dataset``, the
        construction options, then ``options`` (its option names only)."""
        return self.method.config(dataset, **options)

    def options(self, options: dict):
        """Per-call ``options`` -> ``(method config, grid options)``, validated."""
        method_options, grid_options = split_options(type(self.method), options)
        return self.config(**method_options), self.models.grid_options(**grid_options)

    @property
    def region_scorer(self):
        """The CLIP region scorer of grounding (the method's own: ``sam-clip``'s configured
        one, else one dense CLIP pass per image)."""
        return self.method.region_scorer(self.models, self.config())

    @property
    def dense_scorer(self):
        """A dense CLIP scorer (one pass per image, features per patch) for heatmaps: the
        region scorer's when it has one, else one built once."""
        from ovseg.scoring.regions import DenseScorer

        scorer = self.region_scorer
        scorer = getattr(scorer, "dense", scorer)  # the "both" scorer holds a dense one
        return scorer if isinstance(scorer, DenseScorer) else self.method.dense_scorer(self.models)

    def clear_cache(self) -> None:
        """Forget every cached result: SAM's image embeddings, the last probabilities, the
        method's own (regions, region embeddings)."""
        with self.lock:
            self._probs_cache, self._image = None, None
            self.method.clear_cache()
            proposer = self.models.loaded("proposer")
            if proposer is not None:
                proposer.clear_cache()

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
            grid = self.models.grid_options(**grid_options)
            array = self._use(image)
            prompt = make_prompt(array.shape[:2], points, point_labels, boxes, mask_input, scribble)
            if not prompt.is_empty:
                if grid_options:
                    raise ValueError(
                        f"grid options {sorted(grid_options)} apply to automatic mode only, "
                        "not with prompts"
                    )
                return self.proposer.predict(prompt)
            self.proposer  # noqa: B018  (a clear error without SAM)
            return self.models.automatic_masks(array, grid)

    def probabilities(self, array: np.ndarray, vocab: Vocabulary, config, regions=None):
        """The method's probabilities ``(K + B, H, W)`` of ``array`` (the classes, then the
        background names); the last image's are cached per (vocabulary, settings, regions)."""
        if regions is not None and "regions" not in self.method.needs:
            raise ValueError(f"masks= is for a method that uses regions, not {self.method.name!r}")
        region_key = None if regions is None else image_key(np.asarray(regions))
        key = (image_key(array), tuple(vocab.names), tuple(vocab.owners.tolist()),
               vocab.templates, config, region_key)  # fmt: skip
        with self.lock:
            if self._probs_cache is not None and self._probs_cache[0] == key:
                return self._probs_cache[1]
            probs = self.method.probabilities(array, vocab, self.models, config, regions)
            self._probs_cache = (key, probs)
            return probs

    def run(
        self, array: np.ndarray, vocab: Vocabulary, config, regions=None
    ) -> tuple[torch.Tensor | PixelMap, Finished]:
        """The method's steps on ``array`` with ovseg's vocabulary: probabilities of the
        classes and one background row (the best background name), the prediction with that
        row as the background class, then the method's own finish. Returns ``(probs
        (K + 1, H, W), finished)``, probs a tensor or, for a method that computes them tile
        by tile, a :class:`~ovseg.methods.pixelmap.PixelMap`; label K is the background."""
        k = len(vocab.classes)
        with self.lock:
            full = with_background(self.probabilities(array, vocab, config, regions), k)
            labels = self.method.predict(full, config, k)
            return full, self.method.finish(array, full, labels, self.models, config, regions)

    def pixel_probabilities(
        self, image, classes, *, masks=None, background=(), templates=None, **options
    ) -> np.ndarray:
        """Class probabilities float32 (K, H, W) at the input size, from the method.

        ``softmax(logit_scale * cosine)`` over every query (each synonym of each class, and the
        ``background`` names), then per class the max over its synonyms; NACLIP's PAMR is
        included; Trident's map is the one before its SAM refinement, CorrCLIP's the one before
        its vote, with the regions of ``masks`` (bool (N, H, W) or an int id map, 0 =
        unsegmented) or SAM's automatic ones; ``sam-clip`` labels masks, not pixels: zeros.
        ``options``: the method's options.
        """
        vocab = self.vocabulary(classes, background, templates)
        config = self.config(**options)  # the method's options only
        with self.lock:
            array = self._use(image, sam=False)
            probs = self.probabilities(array, vocab, config, masks)
        if isinstance(probs, PixelMap):  # asked for in full: C x H x W float32
            return probs.numpy()[: len(vocab)]
        return probs[: len(vocab)].cpu().numpy().astype(np.float32)

    def instances(self, image, classes, *, background=(), templates=None, **options):
        """Every instance of every class, from a method that finds instances itself
        (``method.finds_instances``: ``"sam3"``; options such as ``threshold`` per call): for
        SAM 3 a :class:`~ovseg.proposals.sam3.Sam3Instances` (``class_index`` int64 (N,),
        ``score`` float32 (N,) in [0, 1], ``box`` float32 (N, 4) XYXY pixels, ``mask`` bool
        (N, H, W)). Raises ``ValueError`` for a method without instances of its own."""
        if not self.method.finds_instances:
            raise ValueError(f"method {self.method.name!r} finds no instances: use method='sam3'")
        vocab, config = self.vocabulary(classes, background, templates), self.config(**options)
        with self.lock:
            return self.method.instances(self._use(image, sam=False), vocab, self.models, config)

    @torch.inference_mode()
    def score(
        self, masks: Masks, classes, image=None, *, background=(), templates=None, **options
    ) -> np.ndarray:
        """Class probabilities float32 (N, K) of each mask, as the method scores a mask (the
        mean of its pixel probabilities inside; ``sam-clip``: its CLIP region scorer)."""
        vocab = self.vocabulary(classes, background, templates)
        config, _ = self.options(options)
        with self.lock:
            array = self._use(image, sam=False)
            return self._mask_scores(array, vocab, config, masks)

    def _mask_scores(self, array, vocab, config, masks: Masks) -> np.ndarray:
        if masks.shape != array.shape[:2]:
            raise ValueError(f"masks are {masks.shape}, the image is {array.shape[:2]}")
        return self.method.mask_scores(
            array, masks.masks, lambda: self.probabilities(array, vocab, config), vocab,
            self.models, config,
        )  # fmt: skip

    def segment(
        self, image, classes, *, points=None, point_labels=None, boxes=None, mask_input=None,
        scribble=None, masks=None, background=(), templates=None, **options,
    ) -> SegmentationResult:  # fmt: skip
        """Segment ``image`` into ``classes``: see :func:`ovseg.segment`.

        The method's map; prompts (``points``, ``boxes``, ``mask_input``, ``scribble``) add
        their object over it, and without prompts ``refine="masks"`` adds SAM's automatic
        masks; ``masks``: the regions of a method that uses regions (CorrCLIP)."""
        vocab = self.vocabulary(classes, background, templates)
        config, grid = self.options(options)
        grid_given = sorted(set(options) & set(GRID_OPTIONS))
        prompt = dict(points=points, point_labels=point_labels, boxes=boxes,
                      mask_input=mask_input, scribble=scribble)  # fmt: skip
        prompted = any(v is not None for v in prompt.values())
        if prompted and grid_given:
            raise ValueError(
                f"grid options {grid_given} apply to automatic mode only, not with prompts"
            )
        if grid_given and not config.refine:
            raise ValueError(
                f"grid options {grid_given} set SAM's automatic masks, which method "
                f"{self.method.name!r} does not use here: add refine='masks'"
            )
        with self.lock:
            array = self._use(image, sam=prompted or bool(config.refine))
            objects = None
            if prompted:
                objects = self.proposer.predict(make_prompt(array.shape[:2], *prompt.values()))
            elif config.refine == "masks":
                objects = self.models.automatic_masks(array, grid)
            return self.label(array, vocab, config, objects=objects, regions=masks)

    def label(
        self,
        array: np.ndarray,
        vocab: Vocabulary,
        config=None,
        *,
        objects: Masks | None = None,
        object_scores: np.ndarray | None = None,
        track_ids: np.ndarray | None = None,
        regions=None,
    ) -> SegmentationResult:
        """The method's map of ``array`` (RGB uint8) with ``objects`` painted over it.

        Args:
            vocab: the classes, background names and templates.
            config: the method's settings (default :meth:`config`).
            objects: masks to paint (prompted objects, automatic proposals, video tracks),
                each with its most probable class: from ``object_scores`` (N, K) when given,
                else as the method scores a mask (:meth:`score`). A mask is kept when that
                probability is > 0 and >= ``config.score_threshold``; the strongest wins.
            track_ids: optional (N,) video ids of ``objects``.
            regions: the regions of a method that uses regions.

        Segments: the objects that own pixels, then the method's own instances (its regions,
        its SAM masks), then one segment per class for the labelled pixels left.
        """
        config = self.config() if config is None else config
        k = len(vocab.classes)
        with self.lock:
            full, finished = self.run(array, vocab, config, regions)
            scores = object_scores
            if objects is not None and scores is None:
                scores = self._mask_scores(array, vocab, config, objects)
        labels = finished.labels
        if labels.size and labels.max() >= k:  # the background row: no class
            labels = np.where(labels >= k, UNLABELED, labels)
        confidence = label_probability(full, labels)  # 0 where UNLABELED
        del full  # from here on, only what the result keeps is held at the input size
        if finished.confidence is not None:  # the method's own score where it has one
            confidence = np.where(finished.confidence > 0, finished.confidence, confidence)
        own = (finished.masks, finished.mask_classes, finished.mask_scores)
        masks, proposal = (None, None) if objects is None else (objects.masks, objects.scores)
        return compose(labels, None, vocab.classes, confidence=confidence, instances=own,
                       masks=masks, mask_scores=scores, proposal_scores=proposal,
                       track_ids=track_ids, score_threshold=config.score_threshold,
                       image=array)  # fmt: skip
