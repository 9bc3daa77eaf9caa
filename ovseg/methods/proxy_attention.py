"""ProxyCLIP's proxy attention (Lan et al., ECCV 2024): CLIP's last block attends with a vision
foundation model's patch affinities. The per-window kernels shared by ProxyCLIP, Trident and
CorrCLIP; the per-image front and the method are :mod:`ovseg.methods.proxyclip`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.clip_blocks import last_block_qkv, tokens_before_last_block
from ovseg.methods.dino import IMAGENET_MEAN, IMAGENET_STD, check_dino, dino_feature_map

__all__ = [
    "dino_input_from_clip",
    "dino_window_features",
    "proxy_attention",
    "proxy_similarity_mean",
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
