"""Per-method, per-dataset settings of the dense methods, read from the references' configs.

:func:`method_config` returns a frozen :class:`MethodConfig`; values come from each
repository's ``configs/cfg_<dataset>.py`` (the ``Resize`` scale and the ``model`` dict) over
its segmentor's defaults.

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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["DATASETS", "METHODS", "MethodConfig", "method_config"]

METHODS = ("sclip", "clearclip", "naclip", "proxyclip", "corrclip")
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
ATTENTIONS = {
    "sclip": ("csa",),
    "clearclip": ("clearclip", "vanilla"),
    "naclip": ("naclip",),
    "proxyclip": ("proxy",),
    "corrclip": ("corrclip",),
}


@dataclass(frozen=True)
class MethodConfig:
    """Settings of one dense method on one benchmark (all sizes in pixels).

    Attributes:
        method: ``"sclip"``, ``"clearclip"`` or ``"naclip"``.
        dataset: benchmark name or ``None`` for the method's defaults.
        short_side: target short side of the mmcv ``imrescale`` (>= 1).
        long_cap: cap on the long side (2048 in every reference config).
        slide_crop: window side, or ``None`` for one whole-image pass.
        slide_stride: window stride, ``1 <= stride <= crop`` (ignored without a crop).
        logit_scale: multiplier of the cosine logits before the softmax (> 0).
        prob_threshold: pixels whose top class probability is below it become class 0,
            in ``[0, 1]`` (0: off).
        area_threshold: SCLIP's rule, in ``[0, 1]`` or ``None``: a foreground class whose
            predicted area is not above this fraction of all foreground pixels gets
            probability 0 before the argmax.
        pamr_steps: PAMR iterations on the full-size logits (0: off).
        pamr_dilations: PAMR neighbour distances (positive ints).
        pad_multiple: zero-pad each window (centred) to a multiple of this, or ``None``.
        gaussian_std: NACLIP's neighbourhood sigma in patches (> 0).
        attention: last-block variant (see :mod:`ovseg.methods.clip_blocks`); ``None`` is
            the method's own (``"csa"``, ``"clearclip"``, ``"naclip"``).
        batch_windows: windows per forward pass (>= 1; memory knob, no effect on numbers).
        beta, gamma: ProxyCLIP's proxy attention ``(S - beta * mean(S)) * gamma`` (finite).
    """

    method: str
    dataset: str | None = None
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
    gaussian_std: float = 5.0
    attention: str | None = None
    batch_windows: int = 16
    beta: float = 1.2
    gamma: float = 3.0

    def __post_init__(self) -> None:
        _validate(self)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _validate(cfg: MethodConfig) -> None:
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    if cfg.dataset is not None and cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be None or one of {DATASETS}, got {cfg.dataset!r}")

    def positive_int(name: str, optional: bool = False) -> None:
        value = getattr(cfg, name)
        if optional and value is None:
            return
        if not _is_int(value) or value < 1:
            extra = " or None" if optional else ""
            raise ValueError(f"{name} must be an int >= 1{extra}, got {value!r}")

    for name in ("short_side", "long_cap", "batch_windows"):
        positive_int(name)
    positive_int("slide_crop", optional=True)
    positive_int("pad_multiple", optional=True)
    if not _is_int(cfg.slide_stride) or cfg.slide_stride < 1:
        raise ValueError(f"slide_stride must be an int >= 1, got {cfg.slide_stride!r}")
    if cfg.slide_crop is not None and cfg.slide_stride > cfg.slide_crop:
        raise ValueError(
            f"slide_stride must be in [1, slide_crop={cfg.slide_crop}] (larger strides leave "
            f"pixels uncovered), got {cfg.slide_stride}"
        )
    if not _is_real(cfg.logit_scale) or cfg.logit_scale <= 0:
        raise ValueError(f"logit_scale must be a finite float > 0, got {cfg.logit_scale!r}")
    if not _is_real(cfg.prob_threshold) or not 0 <= cfg.prob_threshold <= 1:
        raise ValueError(f"prob_threshold must be a float in [0, 1], got {cfg.prob_threshold!r}")
    if cfg.area_threshold is not None and (
        not _is_real(cfg.area_threshold) or not 0 <= cfg.area_threshold <= 1
    ):
        raise ValueError(
            f"area_threshold must be None or a float in [0, 1], got {cfg.area_threshold!r}"
        )
    if not _is_int(cfg.pamr_steps) or cfg.pamr_steps < 0:
        raise ValueError(f"pamr_steps must be an int >= 0, got {cfg.pamr_steps!r}")
    dil = cfg.pamr_dilations
    if not isinstance(dil, tuple) or not dil or not all(_is_int(d) and d >= 1 for d in dil):
        raise ValueError(
            f"pamr_dilations must be a non-empty tuple of ints >= 1, got {cfg.pamr_dilations!r}"
        )
    for name in ("beta", "gamma"):
        if not _is_real(getattr(cfg, name)):
            raise ValueError(f"{name} must be a finite float, got {getattr(cfg, name)!r}")
    if not _is_real(cfg.gaussian_std) or cfg.gaussian_std <= 0:
        raise ValueError(f"gaussian_std must be a finite float > 0, got {cfg.gaussian_std!r}")
    if cfg.attention is not None and cfg.attention not in ATTENTIONS[cfg.method]:
        raise ValueError(
            f"attention for {cfg.method} must be None or one of {ATTENTIONS[cfg.method]}, "
            f"got {cfg.attention!r}"
        )


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
    "naclip": {
        "voc21": dict(prob_threshold=0.1, slide_crop=None),
        "context60": dict(prob_threshold=0.1),
        "coco_object": dict(prob_threshold=0.1),
        "voc20": dict(slide_crop=None),
        "cityscapes": dict(short_side=560),
    },
}

_FIELDS = tuple(f.name for f in dataclasses.fields(MethodConfig) if f.name not in ("method",))


def method_config(method: str, dataset: str | None = None, **overrides: object) -> MethodConfig:
    """The reference settings of ``method`` on ``dataset``, with ``overrides`` applied.

    Args:
        method: ``"sclip"``, ``"clearclip"`` or ``"naclip"``.
        dataset: one of :data:`DATASETS`, or ``None`` for the method's defaults.
        **overrides: any :class:`MethodConfig` field except ``method`` / ``dataset``
            (``pamr_dilations`` may be any sequence of ints).

    Raises:
        ValueError: unknown method, dataset or option name, or a value out of range (the
            message names the option and its allowed range).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"dataset must be None or one of {DATASETS}, got {dataset!r}")
    allowed = tuple(name for name in _FIELDS if name != "dataset")
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; allowed: {', '.join(allowed)}")
    values: dict[str, object] = dict(_DEFAULTS[method])
    if dataset is not None:
        values.update(_PER_DATASET[method].get(dataset, {}))
    values.update(overrides)
    dil = values.get("pamr_dilations")
    if isinstance(dil, (list, tuple)):
        values["pamr_dilations"] = tuple(dil)
    return MethodConfig(method=method, dataset=dataset, **values)
