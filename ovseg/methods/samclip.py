"""``sam-clip``: SAM's masks, each scored by a CLIP region scorer (ovseg's first recipe).

It labels masks, not pixels: its per-pixel map is empty (every pixel background) and its
labels come from SAM's masks, the automatic grid's by default (``refine="masks"``) or the
prompted ones, each taking the class its CLIP region embedding scores highest
(:meth:`~ovseg.scoring.vocabulary.Vocabulary.probabilities`); pixels no kept mask covers stay
unlabeled. The region scorer and its options are this method's options
(:class:`RegionScorerConfig`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ovseg.methods.config import MethodConfig, int_at_least, real_in
from ovseg.methods.protocol import Method
from ovseg.structures import Masks, image_key

__all__ = ["RegionScorerConfig", "SamClip"]


@dataclass(frozen=True)
class RegionScorerConfig(MethodConfig):
    """``sam-clip``: SAM's masks scored by a CLIP region scorer (see
    :mod:`ovseg.scoring.regions`).

    Attributes:
        refine: ``"masks"`` by default: the automatic grid's masks are this method's labels.
        scorer: ``"dense"`` (one CLIP pass per image), ``"crop"`` (one per mask) or
            ``"both"``, or a built scorer object with ``embed(image, masks)``.
        margin, fill, batch_size: the crop scorer's (``"crop"`` and ``"both"``).
        scorer_short_side, window, stride: the dense scorer's ``short_side``, ``window``,
            ``stride`` (``"dense"`` only).
    """

    SCORERS: ClassVar[tuple[str, ...]] = ("dense", "crop", "both")

    refine: str | None = "masks"
    scorer: object = "dense"
    margin: float = 0.1
    fill: str = "grey"
    batch_size: int = 32
    scorer_short_side: int | None = None
    window: int | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.scorer, str):
            if self.scorer not in self.SCORERS:
                raise ValueError(f"scorer must be one of {self.SCORERS}, got {self.scorer!r}")
        elif not callable(getattr(self.scorer, "embed", None)):
            raise TypeError(
                "scorer must be 'dense', 'crop', 'both' or a scorer object with "
                f"embed(image, masks), got {type(self.scorer).__name__}"
            )
        real_in(self, "margin", 0.0)
        int_at_least(self, "batch_size", 1)
        dense = ("scorer_short_side", "window", "stride")
        for name in dense:
            int_at_least(self, name, 1, optional=True)
        dense = [n for n in dense if getattr(self, n) is not None]
        if dense and self.scorer != "dense":
            raise ValueError(f"{dense} are options of scorer='dense', not of {self.scorer!r}")

    def scorer_options(self) -> dict:
        """The options the scorer kind takes (``"both"`` passes the crop scorer's)."""
        crop = dict(margin=self.margin, fill=self.fill, batch_size=self.batch_size)
        dense = dict(short_side=self.scorer_short_side, window=self.window, stride=self.stride)
        return {"crop": crop, "dense": dense, "both": crop}[self.scorer]


_CACHE = 256  # region embeddings kept (the app re-scores its objects at every class change)


class SamClip(Method):
    """SAM's masks scored by CLIP (no published numbers: ovseg's own recipe)."""

    name = "sam-clip"
    needs = frozenset({"clip", "sam"})
    Config = RegionScorerConfig
    hints = {"clip": "ViT-B-16/openai", "sam": "vit_b"}

    def __init__(self, **options):
        super().__init__(**options)
        self._scorers: dict = {}
        self._embeddings: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def clear_cache(self) -> None:
        self._embeddings.clear()

    def region_scorer(self, models, config: RegionScorerConfig):
        """The region scorer of ``config`` on ``models.clip`` (built once per settings)."""
        if not isinstance(config.scorer, str):
            return config.scorer
        from ovseg.scoring.regions import make_scorer

        options = config.scorer_options()
        key = (id(models.clip), config.scorer, tuple(sorted(options.items())))
        if key not in self._scorers:
            self._scorers[key] = make_scorer(config.scorer, models.clip, **options)
        return self._scorers[key]

    def probabilities(self, image, vocab, models, config, regions=None) -> torch.Tensor:
        entries = len(vocab.classes) + len(vocab.background)
        return torch.zeros((1, 1, 1)).expand(entries, *image.shape[:2])

    def predict(self, probs, config, background) -> np.ndarray:
        return np.full(tuple(probs.shape[1:]), -1 if background is None else background, np.int64)

    @torch.inference_mode()
    def mask_scores(self, image, masks, probs, vocab, models, config) -> np.ndarray:
        if len(masks) == 0:
            return np.zeros((0, len(vocab.classes)), np.float32)
        scorer = self.region_scorer(models, config)
        image_id = image_key(image)
        keys = [
            (
                id(scorer),
                image_id,
                hashlib.blake2b(np.packbits(m).tobytes(), digest_size=16).digest(),
            )
            for m in masks
        ]
        missing = [i for i, k in enumerate(keys) if k not in self._embeddings]
        if missing:
            emb = scorer.embed(image, Masks.from_masks(masks[missing])).float()
            for i, e in zip(missing, emb, strict=True):
                self._embeddings[keys[i]] = e
        for k in keys:
            self._embeddings.move_to_end(k)
        rows = torch.stack([self._embeddings[k] for k in keys])
        while len(self._embeddings) > max(_CACHE, len(keys)):
            self._embeddings.popitem(last=False)
        return vocab.probabilities(rows, models.clip)
