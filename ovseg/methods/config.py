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

ProxyCLIP and CorrCLIP share their settings: short side 336 (Cityscapes, ADE20K 448), windows
336 / 112 (Cityscapes 224 / 112) padded to 56, logit scale 40, probability threshold VOC21 0.2,
Context60 0.15, COCO-Object 0.25.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["DATASETS", "METHODS", "MethodConfig", "method_config"]

METHODS = ("sclip", "clearclip", "naclip", "proxyclip", "corrclip", "trident")
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
    "trident": ("trident",),
}
# Options that only one method reads: given for another method they are an error.
METHOD_ONLY = {
    "cos_fac": "trident",
    "refine_neg_cos": "trident",
    "coarse_thresh": "trident",
    "minimal_area": "trident",
    "sam_iou_thresh": "trident",
    "sam_mask_coeff": "trident",
    "sam_halves": "trident",
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
        cos_fac: Trident's SAM similarity threshold factor (finite; 0 keeps every positive
            cosine).
        refine_neg_cos: Trident: a negative threshold stays (True) or becomes 0.6 (False).
        coarse_thresh: Trident's refinement: minimum probability of a prompting pixel and
            class, in ``[0, 1]``.
        minimal_area: Trident: minimum half-resolution area of a prompting region (int >= 0).
        sam_iou_thresh: Trident: SAM masks with predicted IoU above it refine (finite).
        sam_mask_coeff: Trident: scale of the dense mask prompt (finite, >= 0).
        sam_halves: Trident: SAM sees the left and right halves separately (Cityscapes).
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
    cos_fac: float = 1.2
    refine_neg_cos: bool = True
    coarse_thresh: float = 0.2
    minimal_area: int = 225
    sam_iou_thresh: float = 0.8
    sam_mask_coeff: float = 0.005
    sam_halves: bool = False

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
    for name in ("beta", "gamma", "cos_fac", "sam_iou_thresh"):
        if not _is_real(getattr(cfg, name)):
            raise ValueError(f"{name} must be a finite float, got {getattr(cfg, name)!r}")
    if not _is_real(cfg.coarse_thresh) or not 0 <= cfg.coarse_thresh <= 1:
        raise ValueError(f"coarse_thresh must be a float in [0, 1], got {cfg.coarse_thresh!r}")
    if not _is_int(cfg.minimal_area) or cfg.minimal_area < 0:
        raise ValueError(f"minimal_area must be an int >= 0, got {cfg.minimal_area!r}")
    if not _is_real(cfg.sam_mask_coeff) or cfg.sam_mask_coeff < 0:
        raise ValueError(f"sam_mask_coeff must be a finite float >= 0, got {cfg.sam_mask_coeff!r}")
    for name in ("refine_neg_cos", "sam_halves"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(cfg, name)!r}")
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
    foreign = sorted(n for n in overrides if METHOD_ONLY.get(n, method) != method)
    if foreign:
        raise ValueError(
            f"option(s) {foreign} apply only to {sorted({METHOD_ONLY[n] for n in foreign})}"
        )
    values: dict[str, object] = dict(_DEFAULTS[method])
    if dataset is not None:
        values.update(_PER_DATASET[method].get(dataset, {}))
    values.update(overrides)
    dil = values.get("pamr_dilations")
    if isinstance(dil, (list, tuple)):
        values["pamr_dilations"] = tuple(dil)
    return MethodConfig(method=method, dataset=dataset, **values)
