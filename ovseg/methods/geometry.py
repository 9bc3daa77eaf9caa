"""Image and grid geometry shared by the dense training-free methods (mmseg protocol).

Everything here reproduces, number for number, what the reference repositories get from
mmcv / mmseg / their own ViT code:

- :func:`imrescale_size` and :func:`resize_image`: mmcv ``Resize(scale=(long_cap, short_side),
  keep_ratio=True)``, i.e. ``mmcv.imrescale`` with the OpenCV bilinear backend.
- :func:`normalize_image`: mmseg's ``SegDataPreProcessor`` with the CLIP mean/std.
- :func:`slide_windows`: the window placement of mmseg's ``slide_inference``.
- :func:`center_padding`: ClearCLIP-style centred padding of a crop to a multiple.
- :func:`interpolate_pos_embed`: the DINO-style bicubic resampling of a ViT position table
  (``scale_factor = (g + 0.1) / sqrt(N)``, not a target size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MMSEG_CLIP_MEAN",
    "MMSEG_CLIP_STD",
    "center_padding",
    "imrescale_size",
    "interpolate_pos_embed",
    "normalize_image",
    "resize_image",
    "slide_windows",
]

#: The OpenAI CLIP mean / std in 0-255 pixel units exactly as the references' mmseg
#: ``SegDataPreProcessor`` writes them (RGB order).
MMSEG_CLIP_MEAN: tuple[float, float, float] = (122.771, 116.746, 104.094)
MMSEG_CLIP_STD: tuple[float, float, float] = (68.501, 66.632, 70.323)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def imrescale_size(h: int, w: int, short_side: int, long_cap: int = 2048) -> tuple[int, int]:
    """Output size of mmcv ``imrescale(img, (long_cap, short_side))`` for an ``h x w`` image.

    The scale factor is ``min(long_cap / max(h, w), short_side / min(h, w))`` (up or down) and
    each side becomes ``int(side * factor + 0.5)``.

    Returns:
        ``(new_h, new_w)``, each >= 1 for realistic inputs.
    """
    h, w = _positive_int(h, "h"), _positive_int(w, "w")
    short_side = _positive_int(short_side, "short_side")
    long_cap = _positive_int(long_cap, "long_cap")
    max_long, max_short = max(long_cap, short_side), min(long_cap, short_side)
    factor = min(max_long / max(h, w), max_short / min(h, w))
    return int(h * float(factor) + 0.5), int(w * float(factor) + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``size = (new_h, new_w)`` as mmcv does.

    mmcv's ``imresize`` (backend ``'cv2'``, ``interpolation='bilinear'``) is
    ``cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`` on the uint8 array;
    OpenCV's fixed-point uint8 arithmetic (and its 2x-down shortcut to INTER_AREA) is not
    what torch's bilinear computes, so OpenCV itself is used.

    Returns:
        uint8 array ``(new_h, new_w, 3)``; the input itself when the size is unchanged.
    """
    import cv2

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise TypeError("image must be a uint8 numpy array of shape (H, W, 3)")
    if image.shape[2] != 3:
        raise ValueError(f"image must have 3 channels, got shape {image.shape}")
    new_h = _positive_int(size[0], "size[0]")
    new_w = _positive_int(size[1], "size[1]")
    if (new_h, new_w) == image.shape[:2]:
        return image
    return cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def normalize_image(
    image: np.ndarray,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H, W)`` float32 ``(pixel - mean) / std``.

    Args:
        mean, std: three floats each as fractions of 255 (open_clip's ``image_mean`` /
            ``image_std`` convention); they are multiplied by 255. ``None`` uses the
            references' exact 0-255 constants :data:`MMSEG_CLIP_MEAN` / :data:`MMSEG_CLIP_STD`.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise TypeError("image must be a uint8 numpy array of shape (H, W, 3)")

    def _stats(values: Sequence[float] | None, default: tuple[float, ...], name: str):
        if values is None:
            return torch.tensor(default, dtype=torch.float32).view(3, 1, 1)
        vals = [float(v) for v in values]
        if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{name} must be 3 finite floats, got {values!r}")
        if name == "std" and min(vals) <= 0:
            raise ValueError(f"std must be positive, got {values!r}")
        return torch.tensor([v * 255.0 for v in vals], dtype=torch.float32).view(3, 1, 1)

    m = _stats(mean, MMSEG_CLIP_MEAN, "mean")
    s = _stats(std, MMSEG_CLIP_STD, "std")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return ((x - m) / s).unsqueeze(0)


def slide_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Window boxes of mmseg's ``slide_inference`` over an ``h x w`` image.

    ``grids = max(side - crop + stride - 1, 0) // stride + 1`` per axis; window ``i`` spans
    ``y2 = min(i * stride + crop, h)``, ``y1 = max(y2 - crop, 0)`` (same for x), so every window
    has the size ``min(crop, h) x min(crop, w)`` and the last one touches the border. Rows are
    outer, columns inner (the references' loop order).

    Returns:
        list of ``(y1, y2, x1, x2)`` half-open pixel boxes.
    """
    h, w = _positive_int(h, "h"), _positive_int(w, "w")
    crop, stride = _positive_int(crop, "crop"), _positive_int(stride, "stride")
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2 = min(i * stride + crop, h)
            x2 = min(j * stride + crop, w)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def center_padding(h: int, w: int, multiple: int) -> tuple[int, int, int, int]:
    """Zero padding ``(left, right, top, bottom)`` that brings ``h x w`` to multiples of
    ``multiple``, split as ClearCLIP does: ``left = extra // 2``, ``right = extra - left``
    (same for top/bottom); ``(0, 0, 0, 0)`` when already a multiple. The tuple is in
    ``torch.nn.functional.pad`` order for the last two dimensions.
    """
    multiple = _positive_int(multiple, "multiple")
    left = right = top = bottom = 0
    if w % multiple:
        extra = multiple - w % multiple
        left, right = extra // 2, extra - extra // 2
    if h % multiple:
        extra = multiple - h % multiple
        top, bottom = extra // 2, extra - extra // 2
    return left, right, top, bottom


def interpolate_pos_embed(
    pos: torch.Tensor,
    grid: tuple[int, int],
    recompute_scale_factor: bool | None = None,
    keep_if_same_count: bool = True,
) -> torch.Tensor:
    """Resample a ViT position table ``(1 + N, C)`` (class token first, ``N`` a square) to a
    ``gh x gw`` patch grid, as SCLIP / ClearCLIP / NACLIP (and DINO) do.

    The patch part is viewed as ``(1, C, n, n)`` with ``n = sqrt(N)`` and resampled with
    ``F.interpolate(mode='bicubic', align_corners=False,
    scale_factor=((gh + 0.1) / n, (gw + 0.1) / n))``; torch then uses that scale factor (not
    ``n / gh``) in its source-coordinate mapping, which is the point of the ``+ 0.1``.
    ``recompute_scale_factor`` is passed through (``None`` and ``False`` are the same in torch;
    NACLIP passes ``False``, SCLIP and ClearCLIP leave the default).

    With ``keep_if_same_count`` (the references' behaviour: they only interpolate when the
    token count differs) the table is returned unchanged whenever ``gh * gw == N``, even for a
    non-square grid such as 7 x 28.

    Returns:
        ``(1 + gh * gw, C)`` tensor, same dtype/device as ``pos``.
    """
    if not isinstance(pos, torch.Tensor) or pos.ndim != 2:
        raise TypeError("pos must be a 2-D tensor (1 + N, C)")
    gh, gw = _positive_int(grid[0], "grid[0]"), _positive_int(grid[1], "grid[1]")
    n_patch = pos.shape[0] - 1
    side = math.isqrt(n_patch)
    if side * side != n_patch:
        raise ValueError(f"position table has {n_patch} patch entries, not a square")
    if keep_if_same_count and gh * gw == n_patch:
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    dim = pos.shape[1]
    grid_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    out = F.interpolate(
        grid_pos,
        scale_factor=((gh + 0.1) / math.sqrt(n_patch), (gw + 0.1) / math.sqrt(n_patch)),
        mode="bicubic",
        align_corners=False,
        recompute_scale_factor=recompute_scale_factor,
    )
    if tuple(out.shape[-2:]) != (gh, gw):  # cannot happen for sane grids; guard the rounding
        raise RuntimeError(f"position interpolation gave {tuple(out.shape[-2:])}, not {grid}")
    out = out.permute(0, 2, 3, 1).reshape(gh * gw, dim)
    return torch.cat([cls_pos, out], dim=0)
