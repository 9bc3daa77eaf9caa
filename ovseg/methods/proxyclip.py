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
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.clip_blocks import last_block_qkv, tokens_before_last_block
from ovseg.methods.config import MethodConfig
from ovseg.methods.dino import IMAGENET_MEAN, IMAGENET_STD, check_dino, dino_feature_map
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.slide import slide_logits_lowres
from ovseg.methods.tiles import check_query_class

__all__ = [
    "dino_input_from_clip",
    "dino_window_features",
    "proxy_attention",
    "proxy_similarity_mean",
    "proxyclip_logits",
    "proxyclip_pixelmap",
    "proxyclip_probabilities",
    "proxyclip_probabilities_from_config",
    "proxyclip_window_features",
]


def _three_floats(values: Sequence[float], name: str, positive: bool = False) -> list[float]:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of 3 floats, got {values!r}") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be 3 finite floats, got {values!r}")
    if positive and min(vals) <= 0:
        raise ValueError(f"{name} must be positive, got {values!r}")
    return vals


def _check_crops(crops: object) -> Tensor:
    if not isinstance(crops, Tensor):
        raise TypeError(f"crops must be a torch.Tensor, got {type(crops)}")
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[0] < 1:
        raise ValueError(f"crops must be (B, 3, h, w) with B >= 1, got {tuple(crops.shape)}")
    if not crops.is_floating_point():
        raise TypeError(f"crops must be float (CLIP-normalised), got {crops.dtype}")
    return crops


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def dino_input_from_clip(
    crops: Tensor,
    clip_mean: Sequence[float] = OPENAI_MEAN,
    clip_std: Sequence[float] = OPENAI_STD,
) -> Tensor:
    """ProxyCLIP's ``norm(unnorm(crop))``: CLIP-normalised ``(B, 3, h, w)`` -> ImageNet-normalised.

    Per channel ``((x * clip_std + clip_mean) - imagenet_mean) / imagenet_std`` with the 0-1
    scale constants, in that order of float32 operations. Same shape and dtype.
    """
    crops = _check_crops(crops)
    s = _three_floats(clip_std, "clip_std", positive=True)
    m = _three_floats(clip_mean, "clip_mean")
    out = crops.clone()
    for c in range(3):
        out[:, c].mul_(s[c]).add_(m[c])
        out[:, c].sub_(IMAGENET_MEAN[c]).div_(IMAGENET_STD[c])
    return out


def _cosine(features: Tensor) -> Tensor:
    f = F.normalize(features.float().flatten(2), dim=1)
    return torch.einsum("bcm,bcn->bmn", f, f)


def proxy_similarity_mean(features: Tensor) -> Tensor:
    """Per crop the mean of the feature cosine matrix ``S``: ``(B, C, gh, gw)`` -> ``(B,)``."""
    if not isinstance(features, Tensor) or features.ndim != 4:
        raise ValueError("features must be a (B, C, gh, gw) tensor")
    return _cosine(features).mean(dim=(1, 2))


def proxy_attention(
    features: Tensor, beta: float = 1.2, gamma: float = 3.0, mean: Tensor | None = None
) -> Tensor:
    """ProxyCLIP's attention from vision-foundation-model features.

    Args:
        features: ``(B, C, gh, gw)`` (any float dtype; computed in float32).
        beta, gamma: ``S = (S - beta * mean(S)) * gamma``.
        mean: ``mean(S)`` to use instead of each crop's own (Trident: one mean over all the
            windows of an image, see :func:`proxy_similarity_mean`).

    Returns:
        ``(B, N, N)`` float32, ``N = gh * gw`` (row-major): per crop ``S`` the cosine of the
        features, ``mean(S)`` over the crop's whole matrix, entries below 0 masked to
        ``-inf``, softmax over the last axis (keys).
    """
    if not isinstance(features, Tensor) or features.ndim != 4:
        raise ValueError("features must be a (B, C, gh, gw) tensor")
    beta, gamma = _finite(beta, "beta"), _finite(gamma, "gamma")
    sim = _cosine(features)
    if mean is None:
        mean = sim.mean(dim=(1, 2), keepdim=True)
    sim = (sim - mean * beta) * gamma
    sim = sim.masked_fill(sim < 0.0, float("-inf"))
    return torch.softmax(sim, dim=-1)


def dino_window_features(
    dino: nn.Module,
    crops: Tensor,
    clip_mean: Sequence[float] = OPENAI_MEAN,
    clip_std: Sequence[float] = OPENAI_STD,
) -> Tensor:
    """DINO's final-norm feature map ``(B, C, Hd, Wd)`` of CLIP-normalised crops (re-normalised
    for DINO by :func:`dino_input_from_clip`)."""
    dino_in = dino_input_from_clip(crops, clip_mean, clip_std).to(dino.pos_embed.dtype)
    return dino_feature_map(dino, dino_in)


def proxyclip_window_features(
    clip_visual: nn.Module,
    dino: nn.Module,
    crops: Tensor,
    beta: float = 1.2,
    gamma: float = 3.0,
    *,
    clip_mean: Sequence[float] = OPENAI_MEAN,
    clip_std: Sequence[float] = OPENAI_STD,
    features: Tensor | None = None,
    sim_mean: Tensor | None = None,
    project: bool = True,
) -> Tensor:
    """ProxyCLIP's projected patch features of a batch of windows, on the DINO grid.

    Args:
        clip_visual: open_clip ViT image tower (``model.visual``; see
            :mod:`ovseg.methods.clip_blocks`).
        dino: DINO ViT from :func:`~ovseg.methods.dino.build_dino` / ``tiny_dino``.
        crops: ``(B, 3, h, w)`` float, normalised with the CLIP mean/std (padded windows).
        beta, gamma: proxy-attention parameters (ProxyCLIP: 1.2, 3.0).
        clip_mean, clip_std: the 0-1 scale constants used to undo the CLIP normalisation for
            DINO (ProxyCLIP: always the OpenAI ones).
        features: DINO's feature map of these crops, ``(B, C, Hd, Wd)``, when already computed.
        sim_mean: ``mean(S)`` for :func:`proxy_attention` (None: each crop's own).
        project: False stops after ``out_proj`` (Trident aggregates further before ``ln_post``).

    Returns:
        ``(B, D, h // pd, w // pd)`` float32 (``pd`` DINO's patch size, ``D`` CLIP's embedding
        width), ``ln_post(out_proj(A v)) @ proj``, not normalised; with ``project=False``,
        ``out_proj(A v)`` with ``D`` CLIP's width.
    """
    crops = _check_crops(crops)
    beta, gamma = _finite(beta, "beta"), _finite(gamma, "gamma")
    check_dino(dino)
    with torch.no_grad():
        tokens, (gh, gw) = tokens_before_last_block(clip_visual, crops)
        block = clip_visual.transformer.resblocks[-1]
        _, _, v = last_block_qkv(block, tokens)  # (B, heads, 1 + gh * gw, head_dim)
        b, heads, _, head_dim = v.shape

        feats = features
        if feats is None:
            feats = dino_window_features(dino, crops, clip_mean, clip_std)
        hd, wd = feats.shape[-2:]
        attn = proxy_attention(feats, beta, gamma, sim_mean).to(v.dtype)  # (B, Nd, Nd)

        v = v[:, :, 1:].reshape(b * heads, gh, gw, head_dim).permute(0, 3, 1, 2)
        v = F.interpolate(v, size=(hd, wd), mode="bilinear", align_corners=False)
        v = v.permute(0, 2, 3, 1).reshape(b, heads, hd * wd, head_dim)
        out = torch.matmul(attn.unsqueeze(1), v)  # (B, heads, Nd, head_dim)
        out = out.transpose(1, 2).reshape(b, hd * wd, heads * head_dim)
        out = block.attn.out_proj(out)
        if not project:
            return out.transpose(1, 2).reshape(b, -1, hd, wd).float()
        feats_out = clip_visual.ln_post(out) @ clip_visual.proj  # (B, Nd, D)
        return feats_out.transpose(1, 2).reshape(b, -1, hd, wd).float()


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


_CONFIG_FIELDS = (
    "short_side",
    "slide_crop",
    "slide_stride",
    "logit_scale",
    "pad_multiple",
    "long_cap",
)


def proxyclip_probabilities_from_config(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """:func:`proxyclip_probabilities` with the settings taken from ``config``.

    Args:
        config: a :class:`~ovseg.methods.config.MethodConfig` such as
            ``method_config("proxyclip", dataset)`` returns, or any object with those
            attributes. Read: ``short_side``, ``slide_crop`` (None: whole image),
            ``slide_stride``, ``logit_scale``, ``pad_multiple``, ``long_cap`` (all required),
            and ``beta``, ``gamma``, ``batch_windows`` when present (else 1.2, 3.0, 4).
        mean, std: as in :func:`proxyclip_probabilities`.

    Raises:
        TypeError: ``config`` lacks one of the required attributes.
    """
    return proxyclip_probabilities(
        clip_visual, dino, image, text, query_class, num_classes,
        **_config_kwargs(config), mean=mean, std=std,
    )  # fmt: skip


def _config_kwargs(config) -> dict:
    def get(name: str, default: object = ..., /) -> object:
        value = getattr(config, name, default)
        if value is ...:
            raise TypeError(f"config has no {name!r} (need {', '.join(_CONFIG_FIELDS)})")
        return value

    return dict(
        short_side=get("short_side"),
        crop=get("slide_crop"),
        stride=get("slide_stride"),
        logit_scale=get("logit_scale"),
        beta=get("beta", 1.2),
        gamma=get("gamma", 3.0),
        pad_multiple=get("pad_multiple"),
        long_cap=get("long_cap"),
        batch_windows=get("batch_windows", 4),
    )


def proxyclip_pixelmap(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **map_options,
) -> PixelMap:
    """:func:`proxyclip_probabilities_from_config` as a
    :class:`~ovseg.methods.pixelmap.PixelMap` (the models run now, the input-size steps per
    tile); ``map_options``: ``work_bytes`` or ``tile_size``."""
    if not isinstance(text, Tensor) or text.ndim != 2:
        raise TypeError("text must be a (Q, D) tensor")
    qc = check_query_class(query_class, text.shape[0], num_classes)
    kwargs = _config_kwargs(config)
    scale = _finite(kwargs.pop("logit_scale"), "logit_scale")
    low = proxyclip_logits(clip_visual, dino, image, text, **kwargs, mean=mean, std=std,
                           low_res=True)  # fmt: skip
    return PixelMap.from_logits(low, image.shape[:2], scale, qc, num_classes, **map_options)
