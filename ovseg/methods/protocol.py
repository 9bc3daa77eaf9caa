"""The method protocol: what every segmentation method is to the rest of ovseg.

A method is one object that declares what it needs and does its own steps; ``Segmenter``,
``ovseg eval``, the app, video and bench call these steps and never ask which method it is:

1. :meth:`Method.probabilities`: per-pixel probabilities ``(E, H, W)`` of the vocabulary's
   entries (its K classes, then its B background names; each entry the max over its
   synonyms) at the input size: a tensor, or for a large image a
   :class:`~ovseg.methods.pixelmap.PixelMap` that computes them tile by tile (the steps below
   and the caller read it through :func:`with_background`, :func:`label_probability` and the
   map's own reductions, never at full size);
2. :meth:`Method.predict`: labels from probabilities (the references' rule by default);
3. :meth:`Method.finish`: the method's own last step (CorrCLIP's region vote, Trident's SAM
   refinement; nothing for most), returning :class:`Finished`;
4. :meth:`Method.mask_scores`: class probabilities of extra masks (prompted objects, SAM's
   automatic masks with ``refine="masks"``); by default their mean probability inside;
5. :meth:`Method.instances`: every instance of every class, for a method that finds instances
   itself (:attr:`Method.finds_instances`; SAM 3); the others have none.

A method's options are the fields of its frozen :attr:`Method.Config`: given at construction
(``Method(**options)``), overridable per call under the same names (:meth:`Method.config`),
with per-benchmark presets (:meth:`Method.configure`). The models it may read are named in
:attr:`Method.needs` and reach it through a lazy container (``models.clip``, ``models.dino``,
``models.sam``, ``models.proposer``, ``models.grid``, ...) built by the caller.

A new method is one module with a :class:`Method` subclass plus one line in
:data:`ovseg.methods.registry.METHODS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ovseg.methods.config import MethodConfig, preset
from ovseg.methods.pixelmap import PixelMap

__all__ = [
    "MODEL_NEEDS",
    "NEEDS",
    "Finished",
    "Method",
    "label_probability",
    "with_background",
]

MODEL_NEEDS = ("clip", "dino", "sam", "bank", "vfm")
"""Needs that name a model the caller must be given (``Segmenter(clip=..., dino=...)``)."""
NEEDS = (*MODEL_NEEDS, "regions")
"""Every need a method may declare; ``"regions"``: class-agnostic masks, from ``masks=`` per
call or made by the method itself with SAM."""
_MODEL_WORDS = {"clip": "CLIP", "dino": "DINO", "sam": "SAM", "bank": "memory bank",
                "vfm": "vision foundation"}  # fmt: skip


@dataclass
class Finished:
    """What a method's last step leaves: the final map and the instances behind it.

    Attributes:
        labels: int ``(H, W)`` (int64, or int32 from a map) in ``[0, C)``, C the rows of the
            probabilities it finished, or -1 where no class fits.
        masks: bool ``(N, H, W)``, instances behind the map (Trident's kept SAM masks,
            CorrCLIP's regions), or None.
        mask_classes: int ``(N,)``, the class of each instance (those outside ``[0, C)`` are
            not instances of a class and are skipped).
        mask_scores: float ``(N,)`` in ``[0, 1]``, each instance's own quality score.
        confidence: float ``(H, W)`` in ``[0, 1]``, the score of each pixel's label where the
            method has its own (Trident's refined scores; 0 = none), else None: the
            probability of the pixel's label is used.
    """

    labels: np.ndarray
    masks: np.ndarray | None = None
    mask_classes: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    confidence: np.ndarray | None = None


def with_background(probs: torch.Tensor | PixelMap, k: int) -> torch.Tensor | PixelMap:
    """``(K + B, H, W)`` -> ``(K + 1, H, W)``: the K class rows, then one background row, the
    max over the B background rows (zeros without background names). A
    :class:`~ovseg.methods.pixelmap.PixelMap` gives a map (lazily, nothing computed)."""
    if isinstance(probs, PixelMap):
        return probs.select([[i] for i in range(k)] + [list(range(k, probs.num_classes))])
    if probs.shape[0] > k:
        background = probs[k:].amax(0, keepdim=True)
    else:
        background = probs.new_zeros((1, *probs.shape[1:]))
    return torch.cat([probs[:k], background])


def label_probability(probs: torch.Tensor | PixelMap, labels: np.ndarray) -> np.ndarray:
    """The probability of each pixel's label: float32 ``(H, W)`` from ``(C, H, W)``
    probabilities (a tensor or a :class:`~ovseg.methods.pixelmap.PixelMap`, read tile by
    tile) and int labels ``(H, W)``; 0 where a label is outside ``[0, C)`` (``UNLABELED``)."""
    if isinstance(probs, PixelMap):
        return probs.pick(np.asarray(labels))
    labels = np.asarray(labels).astype(np.int64)
    c = probs.shape[0]
    index = torch.from_numpy(np.clip(labels, 0, c - 1))[None].to(probs.device)
    value = probs.gather(0, index)[0].float().cpu().numpy()
    return np.where((labels >= 0) & (labels < c), value, 0.0).astype(np.float32)


class Method(ABC):
    """Base class of the methods (see the module docstring).

    Class attributes a subclass sets:
        name: the registry name (``"naclip"``).
        needs: subset of :data:`NEEDS`.
        Config: its frozen config class (a :class:`~ovseg.methods.config.MethodConfig`).
        defaults, per_dataset: its reference settings, and per benchmark.
        hints: an example spec per model it needs, for error messages.
        finds_instances: whether :meth:`instances` finds instances (a method with its own
            detector, such as SAM 3); ask it, never the method's name.

    Args:
        **options: the method's options (fields of :attr:`Config`), validated now.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    defaults: ClassVar[Mapping[str, Any]] = {}
    per_dataset: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    hints: ClassVar[Mapping[str, str]] = {}
    finds_instances: bool = False

    def __init__(self, **options: Any):
        self.options = dict(options)
        self.config()  # a bad name or value fails now, not on the first image

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    def clear_cache(self) -> None:  # noqa: B027 - most methods keep nothing
        """Forget what the method keeps between calls (regions, region embeddings)."""

    @classmethod
    def options_names(cls) -> tuple[str, ...]:
        """The option names this method takes (its config's fields)."""
        return cls.Config.options()

    @classmethod
    def configure(cls, dataset: str | None = None, **options: Any) -> MethodConfig:
        """The method's reference settings on ``dataset`` (None: its defaults) with
        ``options`` over them. Raises ``ValueError`` naming a bad option or value."""
        return preset(cls.Config, cls.name, dataset, cls.defaults, cls.per_dataset, **options)

    def config(self, dataset: str | None = None, **overrides: Any) -> MethodConfig:
        """Settings for one call: the reference settings on ``dataset``, then the
        construction options, then ``overrides``."""
        return self.configure(dataset, **{**self.options, **overrides})

    @classmethod
    def class_file(cls, dataset: str) -> list[list[str]] | None:
        """The method's own class names for a benchmark (a list, one entry per class, of
        synonym lists, verbatim), or None when it has none (ovseg's class names apply)."""
        return None

    @classmethod
    def check_specs(cls, specs: Mapping[str, object], flags: bool = False) -> None:
        """Refuse, before anything loads, model specs this method cannot run with: by default
        a model of :attr:`needs` that is None. ``specs``: ``{"clip": ..., "sam": ...}``;
        ``flags``: name the command line's flags in the message."""
        for need in MODEL_NEEDS:
            if need in cls.needs and specs.get(need) is None:
                hint = cls.hints.get(need, "...")
                if flags:
                    raise ValueError(f"--method {cls.name} needs --{need} (e.g. --{need} {hint})")
                raise ValueError(
                    f"method {cls.name!r} needs a {_MODEL_WORDS[need]} model: "
                    f"Segmenter({need}={hint!r})"
                )

    def check_models(self, models) -> None:  # noqa: B027 - most methods take any model
        """Refuse built models this method cannot run with (called once they are built)."""

    @abstractmethod
    def probabilities(
        self, image: np.ndarray, vocab, models, config: MethodConfig, regions=None
    ) -> torch.Tensor | PixelMap:
        """Per-pixel probabilities float32 ``(E, H, W)`` of the vocabulary's entries: a tensor,
        or a :class:`~ovseg.methods.pixelmap.PixelMap` computing them tile by tile (then
        :meth:`predict`, :meth:`finish` and :meth:`mask_scores` must take one).

        Args:
            image: RGB uint8 ``(H, W, 3)``.
            vocab: a :class:`~ovseg.scoring.vocabulary.Vocabulary`.
            models: the lazy model container (read only what :attr:`needs` names).
            config: from :meth:`config`.
            regions: for a method that needs ``"regions"``: class-agnostic masks (bool
                ``(N, H, W)`` or an int id map, 0 = unsegmented), or None (its own).
        """

    def predict(
        self, probs: torch.Tensor | PixelMap, config: MethodConfig, background: int | None
    ) -> np.ndarray:
        """Labels int ``(H, W)`` in ``[0, C)`` (or -1: no class) from ``(C, H, W)``
        probabilities: the references' rule (:func:`~ovseg.methods.dense.predict_labels`:
        SCLIP's area rule, argmax, ``prob_threshold`` -> ``background``; on a map,
        :meth:`~ovseg.methods.pixelmap.PixelMap.predict`, tile by tile: int32, the map's
        own array, which its ``pick`` answers without a pass)."""
        from ovseg.methods.dense import predict_labels

        if isinstance(probs, PixelMap):
            labels, _ = probs.predict(
                prob_threshold=getattr(config, "prob_threshold", 0.0),
                area_threshold=getattr(config, "area_threshold", None),
                background_class=background,
            )
            return labels

        return predict_labels(probs, config, background).cpu().numpy()

    def finish(
        self,
        image: np.ndarray,
        probs: torch.Tensor,
        labels: np.ndarray,
        models,
        config: MethodConfig,
        regions=None,
    ) -> Finished:
        """The method's own last step on ``labels`` (from :meth:`predict`); by default none."""
        return Finished(labels=labels)

    def mask_scores(
        self,
        image: np.ndarray,
        masks: np.ndarray,
        probs: Callable[[], torch.Tensor],
        vocab,
        models,
        config: MethodConfig,
    ) -> np.ndarray:
        """Class probabilities float32 ``(N, K)`` of bool masks ``(N, H, W)``: the mean of the
        class rows of ``probs()`` (the image's probabilities, computed on demand) inside each
        mask."""
        from ovseg.structures import mask_class_scores

        k = len(vocab.classes)
        if masks.shape[0] == 0:
            return np.zeros((0, k), np.float32)
        full = probs()
        if isinstance(full, PixelMap):  # tile by tile, only where masks are
            return full.mask_scores(masks)[:, :k]
        return mask_class_scores(masks, full[:k].cpu().numpy())

    def instances(self, image: np.ndarray, vocab, models, config: MethodConfig):
        """Every instance of every class of ``vocab`` in ``image`` (RGB uint8 ``(H, W, 3)``),
        with ``class_index`` int64 ``(N,)``, ``score`` float32 ``(N,)`` in [0, 1], ``box``
        float32 ``(N, 4)`` XYXY pixels and ``mask`` bool ``(N, H, W)`` (SAM 3:
        :class:`~ovseg.proposals.sam3.Sam3Instances`). By default a method finds none: raises
        ``ValueError``."""
        raise ValueError(f"method {self.name!r} finds no instances of its own")

    def region_scorer(self, models, config: MethodConfig):
        """The CLIP region scorer this method embeds regions with (grounding): by default
        :meth:`dense_scorer`."""
        return self.dense_scorer(models)

    def dense_scorer(self, models):
        """One dense CLIP pass per image (:class:`~ovseg.scoring.regions.DenseScorer` with its
        defaults), built once per CLIP."""
        from ovseg.scoring.regions import DenseScorer

        scorer = getattr(self, "_dense_scorer", None)
        if scorer is None or scorer.backend is not models.clip:
            scorer = self._dense_scorer = DenseScorer(models.clip)
        return scorer
