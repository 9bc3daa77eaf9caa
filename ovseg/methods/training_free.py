"""The common base of the training-free methods on an open_clip ViT (SCLIP, ClearCLIP, NACLIP,
ProxyCLIP, Trident, CorrCLIP): their reference settings, the CLIP check, the text queries and
the one size guard, so that each method module holds only its own computation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.config import MethodConfig, SlideConfig, method_config
from ovseg.methods.geometry import imrescale_size
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.protocol import Method

__all__ = ["ClipMethod"]


class ClipMethod(Method):
    """A training-free method on CLIP's image tower: :meth:`probabilities` embeds the
    vocabulary's queries (every synonym, the 80 ImageNet templates by default), fits the
    settings to the image, and hands them to :meth:`query_probabilities`."""

    needs = frozenset({"clip"})
    Config = SlideConfig
    hints = {"clip": "ViT-B-16/openai", "dino": "dino_vitb8", "sam": "vit_b"}
    tiled: ClassVar[bool] = True
    """Whether :meth:`query_pixelmap` gives this method's probabilities as a map (its
    :meth:`finish` reads no full-size probabilities)."""
    map_bytes: ClassVar[int] = 256 * 2**20
    """Above this size of the queries' float32 logits at the input size (``Q x H x W x 4``),
    :meth:`probabilities` returns a :class:`~ovseg.methods.pixelmap.PixelMap` (the same
    numbers, computed tile by tile) instead of a tensor."""

    @classmethod
    def configure(cls, dataset: str | None = None, **options) -> MethodConfig:
        return method_config(cls.name, dataset, **options)

    @classmethod
    def class_file(cls, dataset: str) -> list[list[str]] | None:
        from ovseg.methods.classnames import class_names
        from ovseg.methods.config import DATASETS

        return class_names(cls.name, dataset) if dataset in DATASETS else None

    @staticmethod
    def clip_visual(models) -> torch.nn.Module:
        """The open_clip ViT image tower of ``models.clip``; ``TypeError`` for another CLIP."""
        from ovseg.scoring.backends import OpenClipBackend

        clip = models.clip
        if not (isinstance(clip, OpenClipBackend) and clip.supports_dense):
            raise TypeError(
                "the training-free methods need an open_clip ViT image tower (e.g. "
                f"clip='ViT-B-16/openai'); {getattr(clip, 'name', clip)!r} has none"
            )
        return clip.model.visual

    def check_models(self, models) -> None:
        self.clip_visual(models)  # TypeError for a CLIP without an open_clip ViT tower

    def patch(self, models) -> int:
        """The largest patch side of the models the method reads (CLIP's, and DINO's)."""
        k = self.clip_visual(models).conv1.kernel_size
        patch = max(k) if isinstance(k, tuple) else int(k)
        if "dino" in self.needs:
            p = models.dino.patch_embed.patch_size
            patch = max(patch, max(p) if isinstance(p, tuple) else int(p))
        return patch

    def fit(self, shape: tuple[int, int], config: SlideConfig, models) -> SlideConfig:
        """The config unchanged, unless the resize would leave a side shorter than one patch
        (a very elongated image, where the references fail): then the short side is kept at
        exactly one patch and the long-side cap is raised to allow it."""
        patch = self.patch(models)
        if min(imrescale_size(*shape, config.short_side, config.long_cap)) >= patch:
            return config
        short, long = min(shape), max(shape)
        cap = max(config.long_cap, math.ceil(long * patch / short) + 1)
        return dataclasses.replace(config, short_side=patch, long_cap=cap)

    @staticmethod
    def mean_std(models) -> tuple[Sequence[float] | None, Sequence[float] | None]:
        """CLIP's normalisation, or ``(None, None)`` for the references' own constants."""
        mean, std = tuple(models.clip.mean), tuple(models.clip.std)
        if np.allclose(mean, OPENAI_MEAN) and np.allclose(std, OPENAI_STD):
            return None, None  # the references' own constants, to the last digit
        return mean, std

    @torch.inference_mode()
    def probabilities(self, image, vocab, models, config, regions=None) -> torch.Tensor | PixelMap:
        """The entries' probabilities: a tensor, or a :class:`~ovseg.methods.pixelmap.
        PixelMap` when the method is :attr:`tiled` and the logits at the input size would
        exceed :attr:`map_bytes`."""
        text = vocab.text_embeddings(models.clip)
        entries = len(vocab.classes) + len(vocab.background)
        config = self.fit(image.shape[:2], config, models)
        owners = [int(k) for k in vocab.owners]
        args = (image, text, owners, entries, models, config, regions)
        if self.tiled and len(owners) * image.shape[0] * image.shape[1] * 4 > self.map_bytes:
            return self.query_pixelmap(*args)
        return self.query_probabilities(*args)

    def query_probabilities(
        self,
        image: np.ndarray,
        text: torch.Tensor,
        owners: list[int],
        entries: int,
        models,
        config: SlideConfig,
        regions=None,
    ) -> torch.Tensor:
        """``(entries, H, W)``: ``softmax(logit_scale * cosine)`` over the ``Q`` queries
        ``text`` (unit norm), then per entry the max over its queries (``owners[q]``).

        By default the CLIP-only mmseg protocol of :func:`~ovseg.methods.dense.
        dense_probabilities` with this method's last block (SCLIP, ClearCLIP, NACLIP)."""
        from ovseg.methods.dense import dense_probabilities

        mean, std = self.mean_std(models)
        visual = self.clip_visual(models)
        return dense_probabilities(
            self.name, visual, image, text, owners, entries, config, mean, std
        )

    def query_pixelmap(
        self,
        image: np.ndarray,
        text: torch.Tensor,
        owners: list[int],
        entries: int,
        models,
        config: SlideConfig,
        regions=None,
        **map_options,
    ) -> PixelMap:
        """:meth:`query_probabilities` as a :class:`~ovseg.methods.pixelmap.PixelMap`: the
        models run now, the input-size steps (resize, PAMR, softmax, max per entry) tile by
        tile when read. ``map_options``: ``work_bytes`` or ``tile_size`` of the map."""
        from ovseg.methods.dense import dense_pixelmap

        mean, std = self.mean_std(models)
        visual = self.clip_visual(models)
        return dense_pixelmap(
            self.name, visual, image, text, owners, entries, config, mean, std, **map_options
        )
