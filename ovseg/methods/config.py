"""Typed options of the methods, with the references' per-dataset settings.

Each method has one frozen config class; :func:`method_config` gives the reference settings of
a method on a benchmark, with overrides. Values come from each repository's
``configs/cfg_<dataset>.py`` (the ``Resize`` scale and the ``model`` dict) over its segmentor's
defaults.

============  ============================  ==========================  ========================
setting       SCLIP                         ClearCLIP                   NACLIP
============  ============================  ==========================  ========================
short side    336 (coco_stuff 448,          448                         336 (cityscapes 560)
              cityscapes 560)
crop/stride   224 / 112                     448 / 224 (cityscapes       224 / 112; voc21, voc20:
                                            224 / 224)                  whole image
logit scale   40 (voc21 65; context60,      50                          40
              coco_object 50)
prob thd      0.1 on voc21, context60,      voc21 0.5, context60 0.15,  0.1 on voc21, context60,
              coco_object                   coco_object 0.4             coco_object
other         area threshold 0.1 on voc21   pads windows to 16          PAMR 10 steps (8, 16);
                                                                        Gaussian std 5
============  ============================  ==========================  ========================

ProxyCLIP and CorrCLIP share their settings: short side 336 (Cityscapes, ADE20K 448), windows
336 / 112 (Cityscapes 224 / 112) padded to 56, logit scale 40, probability threshold VOC21 0.2,
Context60 0.15, COCO-Object 0.25. Trident's are in :data:`_PER_DATASET` (see METHODS.md).

Classes: :class:`MethodConfig` (options of every method), :class:`SlideConfig` (the mmseg
sliding-window protocol of SCLIP, ClearCLIP, CorrCLIP), :class:`NaclipConfig`,
:class:`ProxyConfig` (ProxyCLIP), :class:`TridentConfig` (``sam-clip``'s is in its own
module). A method's options are exactly its config's fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from ovseg.methods.region_options import RegionOptions

__all__ = [
    "ALL_DATASETS",
    "DATASETS",
    "CorrClipConfig",
    "EXTRA_DATASETS",
    "METHODS",
    "MethodConfig",
    "NaclipConfig",
    "ProxyConfig",
    "SlideConfig",
    "TridentConfig",
    "method_config",
]

DATASETS = (
    "voc21",
    "context60",
    "coco_object",
    "voc20",
    "context59",
    "coco_stuff",
    "cityscapes",
    "ade20k",
)
# Benchmarks with many classes that only some references configure (CorrCLIPv2: ADE20K-full
# with 847 classes, PASCAL Context with 459); any method may run on them with its defaults.
EXTRA_DATASETS = ("ade847", "context459")
ALL_DATASETS = DATASETS + EXTRA_DATASETS
REFINES = (None, "masks")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def int_at_least(cfg: object, name: str, low: int, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if not is_int(value) or value < low:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be an int >= {low}{extra}, got {value!r}")


def real_in(cfg: object, name: str, low: float = -math.inf, high: float = math.inf) -> None:
    value = getattr(cfg, name)
    if not is_real(value) or not low <= value <= high:
        span = "a finite float" if math.isinf(low) and math.isinf(high) else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {span}, got {value!r}")


def _boolean(cfg: object, name: str) -> None:
    if not isinstance(getattr(cfg, name), bool):
        raise ValueError(f"{name} must be True or False, got {getattr(cfg, name)!r}")


@dataclass(frozen=True)
class MethodConfig:
    """Options every method has.

    Attributes:
        method: the method's name.
        dataset: the benchmark whose reference settings these are, or ``None``.
        score_threshold: minimum class probability in ``[0, 1]`` for a mask (a prompted
            object, a refining mask, or the method's own proposals) to label pixels.
        refine: ``None`` (the method's own map) or ``"masks"``: SAM's automatic masks are
            painted over the map, each taking its most probable class.
    """

    method: str = ""
    dataset: str | None = None
    score_threshold: float = 0.0
    refine: str | None = None

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in ALL_DATASETS:
            raise ValueError(f"dataset must be None or one of {ALL_DATASETS}, got {self.dataset!r}")
        real_in(self, "score_threshold", 0.0, 1.0)
        if self.refine not in REFINES:
            raise ValueError(f"refine must be one of {REFINES}, got {self.refine!r}")

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The names a caller may set (every field but ``method`` and ``dataset``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("method", "dataset"))


@dataclass(frozen=True)
class SlideConfig(MethodConfig):
    """The mmseg protocol of the training-free methods (all sizes in pixels).

    Attributes:
        short_side: target short side of the mmcv ``imrescale`` (>= 1).
        long_cap: cap on the long side (2048 in every reference config).
        slide_crop: window side, or ``None`` for one whole-image pass.
        slide_stride: window stride, ``1 <= stride <= crop`` (ignored without a crop).
        logit_scale: multiplier of the cosine logits before the softmax (> 0).
        prob_threshold: pixels whose top class probability is below it become the background
            class, in ``[0, 1]`` (0: off).
        area_threshold: SCLIP's rule, in ``[0, 1]`` or ``None``: a foreground class whose
            predicted area is not above this fraction of all foreground pixels gets
            probability 0 before the argmax.
        pamr_steps: PAMR iterations on the full-size logits (0: off).
        pamr_dilations: PAMR neighbour distances (positive ints).
        pad_multiple: zero-pad each window (centred) to a multiple of this, or ``None``.
        attention: last-block variant (see :mod:`ovseg.methods.clip_blocks`); ``None`` is
            the method's own.
        batch_windows: windows per forward pass (>= 1; memory knob, no effect on numbers).
    """

    ATTENTIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        "sclip": ("csa",),
        "clearclip": ("clearclip", "vanilla"),
        "naclip": ("naclip",),
        "proxyclip": ("proxy",),
        "corrclip": ("corrclip",),
        "trident": ("trident",),
    }

    short_side: int = 336
    long_cap: int = 2048
    slide_crop: int | None = 224
    slide_stride: int = 112
    logit_scale: float = 40.0
    prob_threshold: float = 0.0
    area_threshold: float | None = None
    pamr_steps: int = 0
    pamr_dilations: tuple[int, ...] = (8, 16)
    pad_multiple: int | None = None
    attention: str | None = None
    batch_windows: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("short_side", "long_cap", "batch_windows", "slide_stride"):
            int_at_least(self, name, 1)
        int_at_least(self, "slide_crop", 1, optional=True)
        int_at_least(self, "pad_multiple", 1, optional=True)
        if self.slide_crop is not None and self.slide_stride > self.slide_crop:
            raise ValueError(
                f"slide_stride must be in [1, slide_crop={self.slide_crop}] (larger strides "
                f"leave pixels uncovered), got {self.slide_stride}"
            )
        if not is_real(self.logit_scale) or self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be a finite float > 0, got {self.logit_scale!r}")
        real_in(self, "prob_threshold", 0.0, 1.0)
        if self.area_threshold is not None:
            if not is_real(self.area_threshold) or not 0 <= self.area_threshold <= 1:
                raise ValueError(
                    f"area_threshold must be None or a float in [0, 1], got {self.area_threshold!r}"
                )
        int_at_least(self, "pamr_steps", 0)
        dil = self.pamr_dilations
        if not isinstance(dil, tuple) or not dil or not all(is_int(d) and d >= 1 for d in dil):
            raise ValueError(f"pamr_dilations must be a non-empty tuple of ints >= 1, got {dil!r}")
        allowed = self.ATTENTIONS.get(self.method, ())
        if self.attention is not None and self.attention not in allowed:
            raise ValueError(
                f"attention for {self.method} must be None or one of {allowed}, "
                f"got {self.attention!r}"
            )


@dataclass(frozen=True)
class NaclipConfig(SlideConfig):
    """NACLIP: :class:`SlideConfig` plus ``gaussian_std``, its neighbourhood sigma in patches."""

    gaussian_std: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_real(self.gaussian_std) or self.gaussian_std <= 0:
            raise ValueError(f"gaussian_std must be a finite float > 0, got {self.gaussian_std!r}")


@dataclass(frozen=True)
class ProxyConfig(SlideConfig):
    """ProxyCLIP's proxy attention ``(S - beta * mean(S)) * gamma`` (``beta``, ``gamma``
    finite)."""

    beta: float = 1.2
    gamma: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        real_in(self, "beta")
        real_in(self, "gamma")


@dataclass(frozen=True)
class CorrClipConfig(RegionOptions, SlideConfig):
    """CorrCLIP: :class:`SlideConfig` plus where its regions come from (``mask_generator``,
    ``eomt_model``: :class:`~ovseg.methods.region_options.RegionOptions`)."""


@dataclass(frozen=True)
class TridentConfig(ProxyConfig):
    """Trident: :class:`ProxyConfig` plus its SAM aggregation and refinement.

    Attributes:
        cos_fac: SAM similarity threshold factor (finite; 0 keeps every positive cosine).
        refine_neg_cos: a negative threshold stays (True) or becomes 0.6 (False).
        coarse_thresh: minimum probability of a prompting pixel and class, in ``[0, 1]``.
        minimal_area: minimum half-resolution area of a prompting region (int >= 0).
        sam_iou_thresh: SAM masks with predicted IoU above it refine (finite).
        sam_mask_coeff: scale of the dense mask prompt (finite, >= 0).
        sam_halves: SAM sees the left and right halves separately (Cityscapes).
    """

    cos_fac: float = 1.2
    refine_neg_cos: bool = True
    coarse_thresh: float = 0.2
    minimal_area: int = 225
    sam_iou_thresh: float = 0.8
    sam_mask_coeff: float = 0.005
    sam_halves: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        real_in(self, "cos_fac")
        real_in(self, "sam_iou_thresh")
        real_in(self, "coarse_thresh", 0.0, 1.0)
        int_at_least(self, "minimal_area", 0)
        real_in(self, "sam_mask_coeff", 0.0)
        _boolean(self, "refine_neg_cos")
        _boolean(self, "sam_halves")


_DEFAULTS: dict[str, dict[str, object]] = {
    "sclip": dict(short_side=336, slide_crop=224, slide_stride=112, logit_scale=40.0,
                  attention="csa"),
    "clearclip": dict(short_side=448, slide_crop=448, slide_stride=224, logit_scale=50.0,
                      pad_multiple=16, attention="clearclip"),
    "naclip": dict(short_side=336, slide_crop=224, slide_stride=112, logit_scale=40.0,
                   pamr_steps=10, pamr_dilations=(8, 16), gaussian_std=5.0, attention="naclip"),
    "proxyclip": dict(short_side=336, slide_crop=336, slide_stride=112, logit_scale=40.0,
                      pad_multiple=56, beta=1.2, gamma=3.0, attention="proxy", batch_windows=4),
    "corrclip": dict(short_side=336, slide_crop=336, slide_stride=112, logit_scale=40.0,
                     pad_multiple=56, attention="corrclip", batch_windows=1),
    "trident": dict(short_side=448, slide_crop=336, slide_stride=224, logit_scale=40.0,
                    beta=1.2, gamma=3.0, attention="trident", cos_fac=1.2, coarse_thresh=0.2,
                    minimal_area=225, sam_iou_thresh=0.8, sam_mask_coeff=0.005),
}  # fmt: skip

_PER_DATASET: dict[str, dict[str, dict[str, object]]] = {
    "sclip": {
        "voc21": dict(logit_scale=65.0, prob_threshold=0.1, area_threshold=0.1),
        "context60": dict(logit_scale=50.0, prob_threshold=0.1),
        "coco_object": dict(logit_scale=50.0, prob_threshold=0.1),
        "coco_stuff": dict(short_side=448),
        "cityscapes": dict(short_side=560),
    },
    "clearclip": {
        "voc21": dict(prob_threshold=0.5),
        "context60": dict(prob_threshold=0.15),
        "coco_object": dict(prob_threshold=0.4),
        "cityscapes": dict(slide_crop=224, slide_stride=224),
    },
    "proxyclip": {
        "voc21": dict(prob_threshold=0.2),
        "context60": dict(prob_threshold=0.15),
        "coco_object": dict(prob_threshold=0.25),
        "cityscapes": dict(short_side=448, slide_crop=224, slide_stride=112),
        "ade20k": dict(short_side=448),
    },
    "corrclip": {
        "voc21": dict(prob_threshold=0.2),
        "context60": dict(prob_threshold=0.15),
        "coco_object": dict(prob_threshold=0.25),
        "cityscapes": dict(short_side=448, slide_crop=224, slide_stride=112),
        "ade20k": dict(short_side=448),
    },
    "trident": {
        "voc21": dict(prob_threshold=0.2, coarse_thresh=0.2),
        "context60": dict(short_side=576, prob_threshold=0.15, coarse_thresh=0.15),
        "coco_object": dict(prob_threshold=0.25, coarse_thresh=0.25),
        "voc20": dict(short_side=336, slide_stride=112, cos_fac=0.0, coarse_thresh=0.2),
        "context59": dict(short_side=576, coarse_thresh=0.15),
        "coco_stuff": dict(coarse_thresh=0.05),
        "cityscapes": dict(
            short_side=688, cos_fac=3.0, refine_neg_cos=False, coarse_thresh=0.10, sam_halves=True
        ),
        "ade20k": dict(short_side=576, refine_neg_cos=False, coarse_thresh=0.05),
    },
    "naclip": {
        "voc21": dict(prob_threshold=0.1, slide_crop=None),
        "context60": dict(prob_threshold=0.1),
        "coco_object": dict(prob_threshold=0.1),
        "voc20": dict(slide_crop=None),
        "cityscapes": dict(short_side=560),
    },
}


def preset(
    cls: type[MethodConfig],
    method: str,
    dataset: str | None = None,
    defaults: dict | None = None,
    per_dataset: dict | None = None,
    **overrides: object,
) -> MethodConfig:
    """``cls`` for ``method`` on ``dataset``: its ``defaults``, then its settings for the
    dataset (``per_dataset[dataset]``), then ``overrides`` (any option of ``cls``; a list of
    ``pamr_dilations`` becomes a tuple).

    Raises:
        ValueError: unknown dataset or option name, or a value out of range (the message names
            the option and its allowed range).
    """
    if dataset is not None and dataset not in ALL_DATASETS:
        raise ValueError(f"dataset must be None or one of {ALL_DATASETS}, got {dataset!r}")
    allowed = cls.options()
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; its options: {', '.join(allowed)}"
        )
    values: dict[str, object] = dict(defaults or {})
    if dataset is not None:
        values.update((per_dataset or {}).get(dataset, {}))
    values.update(overrides)
    if isinstance(values.get("pamr_dilations"), list):
        values["pamr_dilations"] = tuple(values["pamr_dilations"])
    return cls(method=method, dataset=dataset, **values)


_CLASSES: dict[str, type[MethodConfig]] = {
    "sclip": SlideConfig,
    "clearclip": SlideConfig,
    "naclip": NaclipConfig,
    "proxyclip": ProxyConfig,
    "corrclip": CorrClipConfig,
    "trident": TridentConfig,
}
METHODS = tuple(_CLASSES)
"""The training-free methods whose reference settings this module holds."""


def method_config(method: str, dataset: str | None = None, **overrides: object) -> MethodConfig:
    """The reference settings of ``method`` (one of :data:`METHODS`) on ``dataset`` (None: the
    method's defaults), with ``overrides`` applied, as the method's own config class.

    Raises:
        ValueError: unknown method, dataset or option name, or a value out of range.
    """
    if method not in _CLASSES:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return preset(
        _CLASSES[method], method, dataset, _DEFAULTS[method], _PER_DATASET[method], **overrides
    )
