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

import numpy as np
import torch

from ovseg.constants import OPENAI_MEAN, OPENAI_STD

__all__ = ["DENSE_METHODS", "METHOD_OPTIONS", "REGION_METHODS", "DenseMethod", "needs_dino"]

DENSE_METHODS = ("sclip", "clearclip", "naclip", "proxyclip", "corrclip")
_NEEDS_DINO = ("proxyclip", "corrclip")
REGION_METHODS = ("corrclip",)
"""Methods whose map depends on SAM regions (given as an id map, see
:func:`~ovseg.methods.regions.region_id_map`), before and after the probabilities."""
METHOD_OPTIONS = (
    "short_side",
    "slide_crop",
    "slide_stride",
    "logit_scale",
    "prob_threshold",
    "area_threshold",
    "pamr_steps",
    "batch_windows",
)
"""Options that override a method's reference settings (see :class:`MethodConfig`)."""


def needs_dino(method: str) -> bool:
    return method in _NEEDS_DINO


def _config(method: str, dataset: str | None, options: dict):
    from ovseg.methods.config import method_config

    return method_config(method, dataset, **options)


class DenseMethod:
    """One dense method with its CLIP (and DINO) model.

    Args:
        name: ``"sclip"``, ``"clearclip"``, ``"naclip"``, ``"proxyclip"`` or ``"corrclip"``.
        clip: an :class:`~ovseg.scoring.backends.OpenClipBackend` with a ViT image tower.
        dino: a DINO ViT (:func:`~ovseg.methods.dino.build_dino`), needed by ProxyCLIP and
            CorrCLIP.
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
    ) -> torch.Tensor:
        """Class probabilities float32 ``(K, H, W)`` at the input size.

        Args:
            image: RGB uint8 ``(H, W, 3)``.
            text: ``(Q, D)`` unit-norm query embeddings.
            query_class: the class index in ``[0, K)`` of each query.
            num_classes: ``K``.
            config: a :class:`MethodConfig` (default: :meth:`config`).
            regions: int ``(H, W)`` region id map, required by CorrCLIP (all zeros: none).
        """
        from ovseg.methods.dense import dense_probabilities

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
        if self.name == "proxyclip":
            from ovseg.methods.proxyclip import proxyclip_probabilities_from_config

            return proxyclip_probabilities_from_config(
                visual, self.dino, image, text, query_class, num_classes, config, mean, std
            )
        return dense_probabilities(
            self.name, visual, image, text, query_class, num_classes, config, mean, std
        )
