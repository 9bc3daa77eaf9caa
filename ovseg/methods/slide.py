"""mmseg-style sliding-window (or whole-image) dense cosine logits, generic over the encoder.

:func:`slide_logits` is what the references' ``forward_slide`` / ``forward_feature`` compute,
with any ``window_fn`` mapping a batch of normalised windows to patch features, so other
methods (ProxyCLIP, ...) can reuse it:

1. windows from :func:`~ovseg.methods.geometry.slide_windows` (all the same size);
2. optional zero padding of each window to a multiple (ClearCLIP: centred, see
   :func:`~ovseg.methods.geometry.center_padding`);
3. ``window_fn`` on batches of windows -> ``(B, D, gh, gw)``; features L2-normalised over
   ``D``; cosine with the unit-norm text ``(Q, D)`` -> ``(B, Q, gh, gw)``;
4. each window's logits upsampled bilinearly (``align_corners=False``) to the (padded) window
   size, the padding cut off, summed into an ``H x W`` map and divided by the per-pixel
   window count;
5. optionally resized bilinearly to ``out_size`` (the original image size).

:func:`slide_logits_lowres` stops before the last resize (the tensor a
:class:`~ovseg.methods.pixelmap.PixelMap` starts from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ovseg.methods.geometry import center_padding, slide_windows

__all__ = ["patch_logits", "slide_logits", "slide_logits_lowres"]

WindowFn = Callable[[torch.Tensor], torch.Tensor]


def patch_logits(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine logits ``(B, Q, gh, gw)`` of features ``(B, D, gh, gw)`` against unit-norm
    text ``(Q, D)``: features are divided by their L2 norm over ``D`` first."""
    if features.ndim != 4 or text.ndim != 2 or features.shape[1] != text.shape[1]:
        raise ValueError(
            f"features (B, D, gh, gw) and text (Q, D) must share D, got "
            f"{tuple(features.shape)} and {tuple(text.shape)}"
        )
    b, d, gh, gw = features.shape
    tokens = features.reshape(b, d, gh * gw).transpose(1, 2)
    tokens = tokens / tokens.norm(dim=-1, keepdim=True)
    logits = tokens @ text.to(tokens.dtype).T
    return logits.transpose(1, 2).reshape(b, text.shape[0], gh, gw)


def slide_logits(
    image: torch.Tensor,
    window_fn: WindowFn,
    text: torch.Tensor,
    crop: int | None,
    stride: int | None = None,
    pad_multiple: int | None = None,
    batch_windows: int = 8,
    out_size: tuple[int, int] | None = None,
    aux: torch.Tensor | Sequence[torch.Tensor] | None = None,
    aux_pad: float | str | Sequence[float | str] = 0.0,
) -> torch.Tensor:
    """Dense cosine logits of ``image`` against ``text``.

    Args:
        image: ``(1, 3, H, W)`` float32, normalised (the resized network input).
        window_fn: ``(B, 3, h, w)`` windows -> ``(B, D, gh, gw)`` features (any grid).
        text: ``(Q, D)`` unit-norm query embeddings; ``None``: the window features themselves
            (not normalised) take the place of the logits (CorrCLIPv2's bank builder).
        crop: window side in pixels, or ``None`` for one pass over the whole image.
        stride: window stride in pixels (``1 <= stride <= crop``); required with ``crop``.
        pad_multiple: zero-pad each window, centred, to a multiple of this (ClearCLIP: 16);
            ``None`` for no padding. Sliding mode only, as in ClearCLIP (its whole-image
            path does not pad).
        batch_windows: windows per ``window_fn`` call (>= 1).
        out_size: ``(H0, W0)``. Sliding: the averaged ``H x W`` map is resized bilinearly to
            it (the references' final step). Whole image: the grid logits are resized
            straight to it (SCLIP / ClearCLIP); ``None`` keeps ``H x W``, as NACLIP's
            ``forward_feature`` does before its own resize to the original size.
        aux: optional ``(1, C, H, W)`` per-pixel data (or a sequence of them) cut into the
            same windows and padded with ``aux_pad`` (one value per tensor; a number, or
            ``"replicate"`` for edge replication); then ``window_fn(crops, *aux_crops)`` is
            called instead (CorrCLIP's region ids, CorrCLIPv2's VFM features).

    Returns:
        ``(1, Q, H, W)`` float32 logits, or ``(1, Q, *out_size)`` (``Q`` = ``D`` without text).
    """
    logits = slide_logits_lowres(
        image, window_fn, text, crop, stride, pad_multiple, batch_windows, aux, aux_pad
    )
    with torch.inference_mode():
        if crop is None:
            size = tuple(out_size) if out_size is not None else tuple(image.shape[-2:])
        elif out_size is None:
            return logits
        else:
            size = tuple(out_size)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def slide_logits_lowres(
    image: torch.Tensor,
    window_fn: WindowFn,
    text: torch.Tensor,
    crop: int | None,
    stride: int | None = None,
    pad_multiple: int | None = None,
    batch_windows: int = 8,
    aux: torch.Tensor | Sequence[torch.Tensor] | None = None,
    aux_pad: float | str | Sequence[float | str] = 0.0,
) -> torch.Tensor:
    """The logits :func:`slide_logits` resizes last: sliding windows, the windows' average
    ``(1, Q, H, W)`` at the (resized) input size; whole image, the patch-grid logits
    ``(1, Q, gh, gw)``. ``F.interpolate(..., mode="bilinear", align_corners=False)`` of them to
    the output size is :func:`slide_logits`' result (arguments as there)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError("image must be a (1, 3, H, W) tensor")
    if text is not None and text.ndim != 2:
        raise ValueError("text must be (Q, D)")
    if isinstance(batch_windows, bool) or not isinstance(batch_windows, int) or batch_windows < 1:
        raise ValueError(f"batch_windows must be an int >= 1, got {batch_windows!r}")
    h_img, w_img = image.shape[-2:]
    auxes, pads = _aux_list(aux, aux_pad, (h_img, w_img))
    to_logits = (lambda f: f) if text is None else (lambda f: patch_logits(f, text))
    with torch.inference_mode():
        if crop is None:
            return to_logits(window_fn(image, *auxes))
        if stride is None or not 1 <= stride <= crop:
            raise ValueError(f"stride must be in [1, crop={crop}], got {stride!r}")
        boxes = slide_windows(h_img, w_img, crop, stride)
        preds = None
        count = image.new_zeros((1, 1, h_img, w_img))
        # windows grouped by size (all equal in mmseg's placement, but stay generic)
        groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        for box in boxes:
            groups.setdefault((box[1] - box[0], box[3] - box[2]), []).append(box)
        for (h, w), group in groups.items():
            pad = center_padding(h, w, pad_multiple) if pad_multiple else (0, 0, 0, 0)
            left, _, top, _ = pad
            for start in range(0, len(group), batch_windows):
                chunk = group[start : start + batch_windows]
                crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
                if any(pad):
                    crops = F.pad(crops, pad)
                extras = []
                for a, a_pad in zip(auxes, pads, strict=True):
                    extra = torch.cat([a[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
                    if any(pad):
                        if a_pad == "replicate":
                            extra = F.pad(extra, pad, mode="replicate")
                        else:
                            extra = F.pad(extra, pad, value=a_pad)
                    extras.append(extra)
                logits = to_logits(window_fn(crops, *extras))
                if preds is None:
                    preds = image.new_zeros((1, logits.shape[1], h_img, w_img))
                for i, (y1, y2, x1, x2) in enumerate(chunk):
                    up = F.interpolate(
                        logits[i : i + 1],
                        size=crops.shape[-2:],
                        mode="bilinear",
                        align_corners=False,
                    )
                    preds[:, :, y1:y2, x1:x2] += up[:, :, top : top + h, left : left + w]
                    count[:, :, y1:y2, x1:x2] += 1
        return preds / count


def _aux_list(aux, aux_pad, size: tuple[int, int]) -> tuple[list[torch.Tensor], list]:
    if aux is None:
        return [], []
    auxes = [aux] if isinstance(aux, torch.Tensor) else list(aux)
    if isinstance(aux_pad, (str, int, float)):
        pads = [aux_pad] * len(auxes)
    else:
        pads = list(aux_pad)
    if len(pads) != len(auxes):
        raise ValueError(f"aux_pad needs one value per aux tensor, got {len(pads)}")
    for a in auxes:
        if not isinstance(a, torch.Tensor) or a.ndim != 4 or a.shape[0] != 1:
            raise ValueError(f"aux must be (1, C, {size[0]}, {size[1]}) tensors")
        if tuple(a.shape[-2:]) != tuple(size):
            raise ValueError(f"aux must be (1, C, {size[0]}, {size[1]}), got {tuple(a.shape)}")
    for p in pads:
        if isinstance(p, str) and p != "replicate":
            raise ValueError(f"aux_pad must be a number or 'replicate', got {p!r}")
    return auxes, pads
