"""ProxyCLIP (Lan et al., ECCV 2024): CLIP's last block attends with DINO's patch affinities.

Reproduces ``mc-lan/ProxyCLIP`` (``proxyclip_segmentor.py`` and its vendored
``open_clip/transformer.py``), DINO variant, number for number in float32. Its reference
models (``configs/base_config.py``) are CLIP ViT-B/16 OpenAI (``"ViT-B-16/openai"``) and DINO
ViT-B/8 (``"dino_vitb8"``); its settings per benchmark are
``ovseg.methods.config.method_config("proxyclip", dataset)`` and its class files
``ovseg.methods.classnames.class_names("proxyclip", dataset)``.

Per window (:func:`proxyclip_window_features`), for a crop normalised with the CLIP mean/std:

1. DINO input: the crop un-normalised with the OpenAI CLIP mean/std (0-1 scale,
   ``ovseg.constants.OPENAI_MEAN`` / ``OPENAI_STD``; ``x * std + mean``) and normalised again
   with the ImageNet mean/std (:func:`dino_input_from_clip`); padding zeros therefore become
   the CLIP mean colour.
2. DINO features ``f``: the final norm of the last block's output, class token dropped
   (:func:`~ovseg.methods.dino.dino_feature_map`), on the DINO grid ``H/p x W/p``.
3. ``S = cos(f_i, f_j)``; ``S = (S - beta * mean(S)) * gamma`` with the mean over the whole
   ``N x N`` matrix of that crop; ``S < 0 -> -inf``; ``A = softmax(S)`` over keys, one map for
   all heads (:func:`proxy_attention`).
4. CLIP: blocks ``0 .. L-2`` as usual; in the last block only the value projection of
   ``ln_1(x)`` is used: class token dropped, values laid out on the CLIP grid, resized
   bilinearly (``align_corners=False``) to the DINO grid; ``out_proj(A v)`` (no residual, no
   MLP); ``ln_post``; ``@ proj``.

Per image (:func:`proxyclip_probabilities`): mmcv ``imrescale`` (short side 336, long side at
most 2048), mmseg normalisation, mmseg's sliding windows with each window zero-padded, centred,
to a multiple of 56 (ProxyCLIP's ``compute_padsize``; mmseg's own ``slide_inference`` does not
pad), cosine logits on the DINO grid resized bilinearly to the padded window, padding cut off,
windows averaged, resized bilinearly to the original size, ``softmax(40 * cosine)`` over all
queries and the max over each class's queries. The shared
:func:`~ovseg.methods.slide.slide_logits` does exactly this with ``pad_multiple=56``.

Differences from the reference code, none of which changes a number where that code runs:

- ProxyCLIP sets both DINO grid sides from the crop *height* and lays CLIP's values out on a
  ``(w/16, h/16)`` grid (its ``B, nc, w, h = x.shape`` naming). Its reshape of the DINO tokens
  fails unless both padded sides agree, so it only runs on square windows (always the case
  under its configs: the short side equals or exceeds the crop). Here each side uses its own
  size, which is the same on square windows and well-defined on others.
- The mean of ``S`` is taken per crop; ProxyCLIP runs one crop per call, so its batch mean is
  that crop's mean. Windows may therefore be batched (``batch_windows``) without changing
  numbers.
- float32 throughout (the reference casts both models to float16 on CUDA).
- Rows whose every entry is masked (possible only if ``mean(S) * beta >= 1``) give NaN, as in
  the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.config import ProxyConfig
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.proxy_attention import (
    _finite,
    _three_floats,
    dino_input_from_clip,
    dino_window_features,
    proxy_attention,
    proxy_similarity_mean,
    proxyclip_window_features,
)
from ovseg.methods.slide import slide_logits_lowres
from ovseg.methods.tiles import check_query_class
from ovseg.methods.training_free import ClipMethod

__all__ = [
    "ProxyClip",
    "dino_input_from_clip",
    "dino_window_features",
    "proxy_attention",
    "proxy_similarity_mean",
    "proxyclip_logits",
    "proxyclip_pixelmap",
    "proxyclip_probabilities",
    "proxyclip_window_features",
]


def _check_image(image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("image must be a uint8 numpy array (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    return image


def _int_at_least(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def proxyclip_logits(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    text: Tensor,
    short_side: int = 336,
    crop: int | None = 336,
    stride: int = 112,
    *,
    beta: float = 1.2,
    gamma: float = 3.0,
    pad_multiple: int | None = 56,
    long_cap: int = 2048,
    batch_windows: int = 4,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    low_res: bool = False,
) -> Tensor:
    """ProxyCLIP's cosine logits ``(Q, H, W)`` float32 at the input size (before the softmax).

    Arguments as :func:`proxyclip_probabilities`; ``low_res``: return instead the logits
    before the last bilinear resize (the windows' average at the network input, or the patch
    grid of a whole-image pass), from which a :class:`~ovseg.methods.pixelmap.PixelMap` starts.
    """
    image = _check_image(image)
    if not isinstance(text, Tensor) or text.ndim != 2 or text.shape[0] < 1:
        raise TypeError("text must be a (Q, D) tensor with Q >= 1")
    short_side = _int_at_least(short_side, "short_side")
    long_cap = _int_at_least(long_cap, "long_cap")
    batch_windows = _int_at_least(batch_windows, "batch_windows")
    if crop is not None:
        crop = _int_at_least(crop, "crop")
        stride = _int_at_least(stride, "stride")
        if stride > crop:
            raise ValueError(f"stride must be in [1, crop={crop}], got {stride}")
    if pad_multiple is not None:
        pad_multiple = _int_at_least(pad_multiple, "pad_multiple")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    clip_mean = OPENAI_MEAN if mean is None else _three_floats(mean, "mean")
    clip_std = OPENAI_STD if std is None else _three_floats(std, "std", positive=True)

    h0, w0 = image.shape[:2]
    size = imrescale_size(h0, w0, short_side, long_cap)
    x = normalize_image(resize_image(image, size), mean, std)
    device = clip_visual.conv1.weight.device
    x = x.to(device)
    window_fn = functools.partial(
        proxyclip_window_features,
        clip_visual,
        dino,
        beta=beta,
        gamma=gamma,
        clip_mean=clip_mean,
        clip_std=clip_std,
    )
    low = slide_logits_lowres(
        x,
        window_fn,
        text.to(device=device, dtype=torch.float32),
        crop=crop,
        stride=stride if crop is not None else None,
        pad_multiple=pad_multiple if crop is not None else None,
        batch_windows=batch_windows,
    )
    if low_res:
        return low[0]
    with torch.inference_mode():
        return F.interpolate(low, size=(h0, w0), mode="bilinear", align_corners=False)[0]


def proxyclip_probabilities(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    short_side: int = 336,
    crop: int | None = 336,
    stride: int = 112,
    logit_scale: float = 40.0,
    *,
    beta: float = 1.2,
    gamma: float = 3.0,
    pad_multiple: int | None = 56,
    long_cap: int = 2048,
    batch_windows: int = 4,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """ProxyCLIP's class probabilities ``(K, H, W)`` float32 in ``[0, 1]`` at the input size.

    Args:
        clip_visual: open_clip ViT image tower (``model.visual``), float32.
        dino: DINO ViT (:func:`~ovseg.methods.dino.build_dino`), same device as ``clip_visual``.
        image: ``(H, W, 3)`` uint8 RGB.
        text: ``(Q, D)`` unit-norm query embeddings (every synonym its own query).
        query_class: ``Q`` ints in ``[0, num_classes)``, the class of each query.
        num_classes: ``K``.
        short_side: ``imrescale`` short side (ProxyCLIP: 336; Cityscapes and ADE20K 448).
        crop: window side (ProxyCLIP: 336; Cityscapes 224), or None for one whole-image pass
            (ProxyCLIP's ``slide_crop=0``: no padding).
        stride: window stride (112), ``1 <= stride <= crop``.
        logit_scale: multiplier of the cosine before the softmax (40).
        beta, gamma: proxy-attention parameters (1.2, 3.0).
        pad_multiple: windows zero-padded, centred, to a multiple of this (56); None: no pad.
        long_cap: cap of the long side in ``imrescale`` (2048).
        batch_windows: windows per forward pass (memory knob; numbers unchanged).
        mean, std: CLIP normalisation as fractions of 255 (open_clip convention), also used to
            undo it for DINO; None: the references' constants (mmseg's 0-255 CLIP mean/std for
            the input, the OpenAI 0-1 constants for DINO's re-normalisation).

    Returns:
        ``softmax(logit_scale * cosine)`` over the ``Q`` queries, then per class the max over
        its queries (a class without queries gets 0), so the values need not sum to 1.
    """
    if not isinstance(text, Tensor) or text.ndim != 2:
        raise ValueError("text must be (Q, D) and query_class must have one entry per row")
    qc = check_query_class(query_class, text.shape[0], num_classes)
    scale = _finite(logit_scale, "logit_scale")
    if scale <= 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale!r}")
    logits = proxyclip_logits(
        clip_visual,
        dino,
        image,
        text,
        short_side,
        crop,
        stride,
        beta=beta,
        gamma=gamma,
        pad_multiple=pad_multiple,
        long_cap=long_cap,
        batch_windows=batch_windows,
        mean=mean,
        std=std,
    )
    with torch.inference_mode():
        probs = torch.softmax(logits * scale, dim=0)
        idx = torch.as_tensor(qc, device=probs.device)
        out = probs.new_zeros((int(num_classes), *probs.shape[1:]))
        for k in torch.unique(idx).tolist():
            out[k] = probs[idx == k].amax(dim=0)
        return out.float()


class ProxyClip(ClipMethod):
    """ProxyCLIP with DINO (42.3 mIoU over eight benchmarks with ViT-B/8): needs CLIP and
    DINO (``Segmenter(dino="dino_vitb8")``)."""

    name = "proxyclip"
    needs = frozenset({"clip", "dino"})
    Config = ProxyConfig

    def query_probabilities(self, image, text, owners, entries, models, config, regions=None):
        mean, std = self.mean_std(models)
        return proxyclip_probabilities(
            self.clip_visual(models),
            models.dino,
            image,
            text,
            owners,
            entries,
            config.short_side,
            config.slide_crop,
            config.slide_stride,
            config.logit_scale,
            beta=config.beta,
            gamma=config.gamma,
            pad_multiple=config.pad_multiple,
            long_cap=config.long_cap,
            batch_windows=config.batch_windows,
            mean=mean,
            std=std,
        )

    def query_pixelmap(
        self, image, text, owners, entries, models, config, regions=None, **map_options
    ):
        mean, std = self.mean_std(models)
        return proxyclip_pixelmap(
            self.clip_visual(models), models.dino, image, text, owners, entries, config,
            mean, std, **map_options,
        )  # fmt: skip


def proxyclip_pixelmap(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config: ProxyConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **map_options,
) -> PixelMap:
    """:func:`proxyclip_probabilities` with the settings of ``config`` as a
    :class:`~ovseg.methods.pixelmap.PixelMap` (the models run now, the input-size steps per
    tile); ``map_options``: ``work_bytes`` or ``tile_size``."""
    if not isinstance(text, Tensor) or text.ndim != 2:
        raise TypeError("text must be a (Q, D) tensor")
    qc = check_query_class(query_class, text.shape[0], num_classes)
    scale = _finite(config.logit_scale, "logit_scale")
    low = proxyclip_logits(
        clip_visual, dino, image, text, config.short_side, config.slide_crop,
        config.slide_stride, beta=config.beta, gamma=config.gamma,
        pad_multiple=config.pad_multiple, long_cap=config.long_cap,
        batch_windows=config.batch_windows, mean=mean, std=std, low_res=True,
    )  # fmt: skip
    return PixelMap.from_logits(low, image.shape[:2], scale, qc, num_classes, **map_options)
