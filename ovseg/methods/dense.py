"""Per-image front of the dense methods: probabilities and labels as the references compute.

:func:`dense_probabilities` = ovseg's ``pixel_probabilities`` for SCLIP, ClearCLIP and NACLIP:

1. mmcv ``imrescale`` of the uint8 RGB image (short side ``config.short_side``, long side
   capped at ``config.long_cap``, OpenCV bilinear);
2. mmseg normalisation with the CLIP mean/std;
3. :func:`~ovseg.methods.slide.slide_logits` with the method's last block
   (:func:`~ovseg.methods.clip_blocks.dense_features`), windows padded for ClearCLIP; the
   logits end at the original size (NACLIP's whole-image mode: grid -> resized input size ->
   original size, two bilinear steps, as its code does);
4. PAMR on the full-size logits where ``config.pamr_steps > 0`` (NACLIP), guided by the
   normalised input resized bilinearly to the original size;
5. ``softmax(logit_scale * cosine)`` over all queries, then per class the max over its queries.

:func:`dense_pixelmap` stops before the input size: it returns a
:class:`~ovseg.methods.pixelmap.PixelMap` over the logits of step 3 before their last resize
(and the network input, PAMR's guide), which computes steps 3-5 tile by tile on demand.

:func:`predict_labels` then applies SCLIP's area rule, the argmax and the probability
threshold (:meth:`~ovseg.methods.pixelmap.PixelMap.predict` on a map). (NACLIP's final
division of its returned probabilities by their sum comes after the prediction and is not part
of either.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.methods.clip_blocks import METHODS, dense_features
from ovseg.methods.config import MethodConfig, SlideConfig
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.pamr import pamr
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.slide import slide_logits, slide_logits_lowres
from ovseg.methods.tiles import check_query_class

__all__ = [
    "class_max",
    "dense_logits",
    "dense_pixelmap",
    "dense_probabilities",
    "predict_labels",
]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("image must be a uint8 numpy array (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")


def _lowres(method, visual, image, text, config, mean, std):
    """``(low, x)``: the logits whose bilinear resize to the input size is step 3's result
    (sliding: the windows' average at the network input; whole image: the patch grid, or for
    NACLIP the grid resized to the network input) and the normalised network input ``x``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(config, SlideConfig):
        raise TypeError("config must be a SlideConfig (see method_config)")
    if config.method != method:
        raise ValueError(f"config is for {config.method!r}, not {method!r}")
    _check_image(image)
    if not isinstance(text, torch.Tensor) or text.ndim != 2:
        raise TypeError("text must be a (Q, D) tensor")
    h0, w0 = image.shape[:2]
    size = imrescale_size(h0, w0, config.short_side, config.long_cap)
    device = next(visual.parameters()).device
    x = normalize_image(resize_image(image, size), mean, std).to(device)
    text = text.to(device=device, dtype=torch.float32)
    window_fn = functools.partial(
        dense_features,
        visual,
        method=method,
        attention=config.attention,
        gaussian_std=getattr(config, "gaussian_std", 5.0),
    )
    with torch.inference_mode():
        args = (x, window_fn, text, config.slide_crop, config.slide_stride)
        kwargs = dict(pad_multiple=config.pad_multiple, batch_windows=config.batch_windows)
        if config.slide_crop is None and method == "naclip":
            return slide_logits(*args, **kwargs, out_size=None), x
        return slide_logits_lowres(*args, **kwargs), x


def dense_logits(
    method: str,
    visual: torch.nn.Module,
    image: np.ndarray,
    text: torch.Tensor,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Cosine logits ``(Q, H, W)`` float32 at the input size, after PAMR where configured
    (steps 1-4 of the module docstring). Arguments as :func:`dense_probabilities`."""
    low, x = _lowres(method, visual, image, text, config, mean, std)
    h0, w0 = image.shape[:2]
    with torch.inference_mode():
        logits = F.interpolate(low, size=(h0, w0), mode="bilinear", align_corners=False)
        if config.pamr_steps > 0:
            guide = F.interpolate(x, size=(h0, w0), mode="bilinear", align_corners=False)
            logits = pamr(guide, logits, config.pamr_steps, config.pamr_dilations)
        return logits[0]


def dense_pixelmap(
    method: str,
    visual: torch.nn.Module,
    image: np.ndarray,
    text: torch.Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **map_options,
) -> PixelMap:
    """:func:`dense_probabilities` as a :class:`~ovseg.methods.pixelmap.PixelMap`: the model
    runs now, the input-size steps (resize, PAMR, softmax, class max) per tile on demand.
    ``map_options``: ``work_bytes`` or ``tile_size`` of the map."""
    qc = check_query_class(query_class, _rows(text), num_classes)
    low, x = _lowres(method, visual, image, text, config, mean, std)
    return PixelMap.from_logits(
        low[0], image.shape[:2], config.logit_scale, qc, num_classes,
        guide=x[0], pamr_steps=config.pamr_steps, pamr_dilations=config.pamr_dilations,
        **map_options,
    )  # fmt: skip


def _rows(text) -> int:
    return text.shape[0] if isinstance(text, torch.Tensor) and text.ndim == 2 else -1


def class_max(probs: torch.Tensor, query_class: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per class the max over its queries: ``(Q, H, W)`` -> ``(K, H, W)``; a class without
    queries gets 0 (as the references' one-hot product does)."""
    idx = torch.as_tensor(list(query_class), dtype=torch.int64, device=probs.device)
    out = probs.new_zeros((num_classes, *probs.shape[1:]))
    for k in torch.unique(idx).tolist():
        out[k] = probs[idx == k].amax(dim=0).clamp_min(0)
    return out


def dense_probabilities(
    method: str,
    visual: torch.nn.Module,
    image: np.ndarray,
    text: torch.Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Class probabilities ``(K, H, W)`` float32 in ``[0, 1]`` at the input size ``H, W``.

    Args:
        method: ``"sclip"``, ``"clearclip"`` or ``"naclip"`` (must equal ``config.method``).
        visual: open_clip ViT image tower (``model.visual``), float32 on CPU or GPU.
        image: ``(H, W, 3)`` uint8 RGB.
        text: ``(Q, D)`` unit-norm query embeddings (see :func:`~ovseg.methods.text.
            query_embeddings`).
        query_class: ``Q`` ints in ``[0, num_classes)``, the class of each query.
        num_classes: ``K``.
        config: from :func:`~ovseg.methods.config.method_config`.
        mean, std: CLIP normalisation as fractions of 255 (open_clip convention); ``None``:
            the references' exact constants.

    Returns:
        ``softmax(logit_scale * cosine)`` over the ``Q`` queries, max over each class's
        queries; per pixel the values of a class's best query, so they need not sum to 1.
        On the device of ``visual``.
    """
    qc = check_query_class(query_class, _rows(text), num_classes)
    logits = dense_logits(method, visual, image, text, config, mean, std)
    with torch.inference_mode():
        probs = torch.softmax(logits * config.logit_scale, dim=0)
        return class_max(probs, qc, num_classes)


def predict_labels(
    probs: torch.Tensor, config: MethodConfig, background_class: int | None = 0
) -> torch.Tensor:
    """Labels ``(H, W)`` int64 from class probabilities ``(K, H, W)``.

    In the references' order (a config without these thresholds: plain argmax): SCLIP's area
    rule when ``config.area_threshold`` is set (from
    the argmax, count each non-background class's pixels; a class whose count is not above
    ``area_threshold`` times the total of those counts gets probability 0), then the argmax
    (first index on ties), then pixels whose max probability is below
    ``config.prob_threshold`` become ``background_class``.

    Args:
        background_class: the class of the threshold rules (the references: 0); ``None`` for
            a dataset without one, allowed only when both thresholds are off.
    """
    if not isinstance(probs, torch.Tensor) or probs.ndim != 3:
        raise TypeError("probs must be a (K, H, W) tensor")
    k = probs.shape[0]
    prob_threshold = getattr(config, "prob_threshold", 0.0)
    area_threshold = getattr(config, "area_threshold", None)
    uses_bg = prob_threshold > 0 or area_threshold is not None
    if background_class is None:
        if uses_bg:
            raise ValueError(
                "background_class is None but the config has a probability or area threshold"
            )
    elif isinstance(background_class, bool) or not 0 <= int(background_class) < k:
        raise ValueError(
            f"background_class must be None or an int in [0, {k}), got {background_class!r}"
        )
    with torch.inference_mode():
        probs = probs.clone()
        if area_threshold is not None:
            pred = probs.argmax(dim=0)
            fg = torch.ones(k, dtype=torch.bool, device=probs.device)
            fg[background_class] = False
            area = torch.bincount(pred.flatten(), minlength=k).to(probs.dtype)[fg]
            keep = (area > area_threshold * area.sum()).to(probs.dtype)
            probs[fg] *= keep.view(-1, 1, 1)
        labels = probs.argmax(dim=0)
        if prob_threshold > 0:
            labels[probs.max(dim=0).values < prob_threshold] = background_class
        return labels.to(torch.int64)
