"""A dense method bound to its models: the pipeline's per-pixel stage.

:class:`DenseMethod` checks the method name, its models and its options once, at construction,
then turns an image and query embeddings into class probabilities ``(K, H, W)`` with the
method's reference settings (:func:`~ovseg.methods.config.method_config`) under the caller's
overrides.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ovseg.constants import OPENAI_MEAN, OPENAI_STD

__all__ = [
    "DENSE_METHODS",
    "METHOD_OPTIONS",
    "REGION_METHODS",
    "DenseMethod",
    "MethodRefinement",
    "needs_dino",
    "needs_sam",
]

DENSE_METHODS = ("sclip", "clearclip", "naclip", "proxyclip", "corrclip", "trident")
_NEEDS_DINO = ("proxyclip", "corrclip", "trident")
REGION_METHODS = ("corrclip",)
"""Methods whose map depends on SAM regions (given as an id map, see
:func:`~ovseg.methods.regions.region_id_map`), before and after the probabilities."""
_NEEDS_SAM = ("trident",)
METHOD_OPTIONS = (
    "short_side",
    "slide_crop",
    "slide_stride",
    "logit_scale",
    "prob_threshold",
    "area_threshold",
    "pamr_steps",
    "batch_windows",
    "cos_fac",
    "refine_neg_cos",
    "coarse_thresh",
    "minimal_area",
    "sam_iou_thresh",
    "sam_mask_coeff",
    "sam_halves",
)
"""Options that override a method's reference settings (see :class:`MethodConfig`)."""


def needs_dino(method: str) -> bool:
    return method in _NEEDS_DINO


def needs_sam(method: str) -> bool:
    """Whether the method runs SAM itself (its probabilities or its refinement need it)."""
    return method in _NEEDS_SAM


@dataclass
class MethodRefinement:
    """A method's own SAM-based refinement of its map (Trident's prompts).

    Attributes:
        labels: int64 ``(H, W)``, class indices of the final map (same classes as the
            probabilities it refines).
        scores: float32 ``(K, H, W)``, the refined class scores (0 where nothing refined).
        masks: bool ``(N, H, W)``, the SAM masks the refinement kept.
        mask_classes: int64 ``(N,)``, the class of each mask.
        mask_scores: float32 ``(N,)``, SAM's own quality score of each mask.
    """

    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    mask_classes: np.ndarray
    mask_scores: np.ndarray


def _config(method: str, dataset: str | None, options: dict):
    from ovseg.methods.config import method_config

    return method_config(method, dataset, **options)


class DenseMethod:
    """One dense method with its CLIP (and DINO) model.

    Args:
        name: ``"sclip"``, ``"clearclip"``, ``"naclip"``, ``"proxyclip"``, ``"corrclip"`` or
            ``"trident"``.
        clip: an :class:`~ovseg.scoring.backends.OpenClipBackend` with a ViT image tower.
        dino: a DINO ViT (:func:`~ovseg.methods.dino.build_dino`), needed by ProxyCLIP,
            CorrCLIP and Trident.
        **options: overrides of the reference settings, names in :data:`METHOD_OPTIONS`.

    Raises:
        ValueError: unknown method or option, a bad option value, or a missing DINO model.
        TypeError: a CLIP model the dense methods cannot run (not an open_clip ViT).
    """

    def __init__(self, name: str, clip, dino=None, **options):
        if name not in DENSE_METHODS:
            raise ValueError(f"method must be one of {DENSE_METHODS}, got {name!r}")
        if needs_dino(name) and dino is None:
            raise ValueError(
                f"method {name!r} needs a DINO model: Segmenter(dino='dino_vitb8') (or "
                "'dino_vitb16', 'NAME:/path.pth', a built model)"
            )
        from ovseg.scoring.backends import OpenClipBackend

        if not (isinstance(clip, OpenClipBackend) and clip.supports_dense):
            raise TypeError(
                f"method {name!r} needs an open_clip ViT image tower (e.g. clip='ViT-B-16/openai'"
                f"); {getattr(clip, 'name', clip)!r} has none"
            )
        self.name, self.clip, self.dino = name, clip, dino
        self.options = self.check_options(options)
        self.config()  # validate the values now, not on the first image

    @property
    def uses_sam(self) -> bool:
        """True when :meth:`probabilities` and :meth:`refine` need a SAM ``Proposer``."""
        return needs_sam(self.name)

    @staticmethod
    def check_options(options: dict) -> dict:
        unknown = sorted(set(options) - set(METHOD_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown method option(s) {unknown}; known: {', '.join(METHOD_OPTIONS)}"
            )
        return dict(options)

    def config(self, dataset: str | None = None, **overrides):
        """The :class:`~ovseg.methods.config.MethodConfig` for ``dataset`` (None: the method's
        defaults) with the construction options, then ``overrides``, applied."""
        options = {**self.options, **self.check_options(overrides)}
        return _config(self.name, dataset, options)

    @property
    def uses_regions(self) -> bool:
        """True for a method whose map comes from SAM regions (CorrCLIP): its probabilities
        take a region id map, and :meth:`refine_labels` applies its rule after them."""
        return self.name in REGION_METHODS

    def refine_labels(self, labels: np.ndarray, regions: np.ndarray | None) -> np.ndarray:
        """The method's own step after the prediction: CorrCLIP's majority vote inside each
        region (:func:`~ovseg.methods.regions.region_vote`); other methods: unchanged."""
        if self.name != "corrclip" or regions is None:
            return labels
        from ovseg.methods.regions import region_vote

        return region_vote(labels, regions)

    def _patch(self) -> int:
        """The largest patch side of the models (CLIP's, and DINO's for ProxyCLIP)."""
        k = self.clip.model.visual.conv1.kernel_size
        patch = max(k) if isinstance(k, tuple) else int(k)
        if self.dino is not None:
            p = self.dino.patch_embed.patch_size
            patch = max(patch, max(p) if isinstance(p, tuple) else int(p))
        return patch

    def _fit(self, shape: tuple[int, int], config):
        """The config unchanged, unless the resize would leave a side shorter than one patch
        (a very elongated image, where the references fail): then the short side is kept at
        exactly one patch and the long-side cap is raised to allow it."""
        from ovseg.methods.geometry import imrescale_size

        patch = self._patch()
        if min(imrescale_size(*shape, config.short_side, config.long_cap)) >= patch:
            return config
        short, long = min(shape), max(shape)
        cap = max(config.long_cap, math.ceil(long * patch / short) + 1)
        return dataclasses.replace(config, short_side=patch, long_cap=cap)

    def _mean_std(self) -> tuple[Sequence[float] | None, Sequence[float] | None]:
        mean, std = tuple(self.clip.mean), tuple(self.clip.std)
        if np.allclose(mean, OPENAI_MEAN) and np.allclose(std, OPENAI_STD):
            return None, None  # the references' own constants, to the last digit
        return mean, std

    @torch.inference_mode()
    def probabilities(
        self,
        image: np.ndarray,
        text: torch.Tensor,
        query_class: Sequence[int],
        num_classes: int,
        config=None,
        regions: np.ndarray | None = None,
        sam=None,
    ) -> torch.Tensor:
        """Class probabilities float32 ``(K, H, W)`` at the input size.

        Args:
            image: RGB uint8 ``(H, W, 3)``.
            text: ``(Q, D)`` unit-norm query embeddings.
            query_class: the class index in ``[0, K)`` of each query.
            num_classes: ``K``.
            config: a :class:`MethodConfig` (default: :meth:`config`).
            regions: int ``(H, W)`` region id map, required by CorrCLIP (all zeros: none).
            sam: the SAM :class:`~ovseg.proposals.sam.Proposer` (built with
                ``keep_block_input=True``) for methods that use SAM (:attr:`uses_sam`).
        """
        from ovseg.methods.dense import class_max, dense_probabilities

        config = self._fit(image.shape[:2], self.config() if config is None else config)
        mean, std = self._mean_std()
        visual = self.clip.model.visual
        if self.name == "corrclip":
            from ovseg.methods.corrclip import corrclip_probabilities

            if regions is None:
                raise ValueError("corrclip needs a region id map (regions=...)")
            return corrclip_probabilities(
                visual, self.dino, image, regions, text, query_class, num_classes, config,
                mean, std,
            )  # fmt: skip
        if self.uses_sam:
            from ovseg.methods.trident import sam_guides, trident_logits

            if sam is None:
                raise ValueError(f"method {self.name!r} needs a SAM model: Segmenter(sam='vit_b')")
            guides = sam_guides(sam, image, config, visual)
            logits = trident_logits(visual, self.dino, guides, image, text, config, mean, std)
            probs = torch.softmax(logits * config.logit_scale, dim=0)
            return class_max(probs, [int(k) for k in query_class], num_classes)
        if self.name == "proxyclip":
            from ovseg.methods.proxyclip import proxyclip_probabilities_from_config

            return proxyclip_probabilities_from_config(
                visual, self.dino, image, text, query_class, num_classes, config, mean, std
            )
        return dense_probabilities(
            self.name, visual, image, text, query_class, num_classes, config, mean, std
        )

    def refine(
        self, image: np.ndarray, probs: torch.Tensor, labels: torch.Tensor, config=None, sam=None
    ) -> MethodRefinement | None:
        """The method's own refinement of its labels with SAM, or None for methods without one.

        Args:
            image: RGB uint8 ``(H, W, 3)`` (the image of ``probs``).
            probs: ``(K, H, W)`` from :meth:`probabilities`.
            labels: ``(H, W)`` int labels in ``[0, K)`` from
                :func:`~ovseg.methods.dense.predict_labels`.
            config: a :class:`MethodConfig` (default: :meth:`config`).
            sam: the SAM ``Proposer`` that :meth:`probabilities` used.
        """
        if not self.uses_sam:
            return None
        from ovseg.methods.trident import sam_image
        from ovseg.methods.trident_refine import trident_refine

        if sam is None:
            raise ValueError(f"method {self.name!r} needs a SAM model: Segmenter(sam='vit_b')")
        config = self._fit(image.shape[:2], self.config() if config is None else config)
        sam.set_image(sam_image(image, self.clip.model.visual))  # cached: no second encoder run
        return trident_refine(
            probs,
            labels,
            sam.predictor,
            coarse_thresh=config.coarse_thresh,
            minimal_area=config.minimal_area,
            sam_mask_coeff=config.sam_mask_coeff,
            sam_iou_thresh=config.sam_iou_thresh,
        )
