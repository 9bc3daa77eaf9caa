"""PAMR (pixel-adaptive mask refinement, Araslanov & Roth 2020) as NACLIP applies it.

For each dilation ``d`` the 8 neighbours of a pixel at offsets ``{-d, 0, d}^2 \\ {(0, 0)}``
(edges replicated) are compared with it. With the image ``I`` (``(1, 3, H, W)``):

- ``sigma_c`` = unbiased standard deviation over the 9 taps (centre included) of every
  dilation together (``9 * len(dilations)`` values), per channel ``c``;
- ``a_n = mean_c( -|I_c - I_c(n)| / (1e-8 + 0.1 * sigma_c) )`` for each of the
  ``8 * len(dilations)`` neighbours ``n``, then ``softmax`` over the neighbours;
- ``steps`` times: ``mask <- sum_n a_n * mask(n)`` (neighbour values, edges replicated).

NACLIP runs it on the cosine logits of all queries at the original image size, before the
softmax, with the image = the normalised resized input resized bilinearly to that size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pamr", "pamr_affinity", "pamr_halo", "pamr_propagate"]

# neighbour order of the reference 3x3 kernels: row-major, centre skipped
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_TAPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1))


def _shifted(x: torch.Tensor, d: int, offsets) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, len(offsets), H, W)``: values at ``(y + oy*d, x + ox*d)``,
    replicate-padded at the border."""
    h, w = x.shape[-2:]
    padded = F.pad(x, [d] * 4, mode="replicate")
    return torch.stack(
        [
            padded[..., d + oy * d : d + oy * d + h, d + ox * d : d + ox * d + w]
            for oy, ox in offsets
        ],
        dim=2,
    )


def _affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    total = None
    for c in range(image.shape[1]):  # one channel at a time: a third of the buffers
        channel = image[:, c : c + 1]
        taps = torch.cat([_shifted(channel, d, _TAPS) for d in dilations], dim=2)
        std = taps.std(dim=2, keepdim=True)
        del taps
        diff = torch.cat(
            [(channel.unsqueeze(2) - _shifted(channel, d, _NEIGHBOURS)).abs() for d in dilations],
            dim=2,
        )
        term = diff.neg_().div_(1e-8 + 0.1 * std)
        total = term if total is None else total.add_(term)
    return torch.softmax(total.div_(image.shape[1]), dim=2)


def pamr_affinity(
    image: torch.Tensor, dilations: Sequence[int], strip_pixels: int | None = None
) -> torch.Tensor:
    """Neighbour weights ``(1, 1, 8 * len(dilations), H, W)`` of ``image`` ``(1, 3, H, W)``;
    they sum to 1 over dimension 2.

    With ``strip_pixels``, computed in strips of rows of about that many pixels, each grown by
    the largest dilation (the weights of a pixel read the image that far): the numbers of one
    pass (to float rounding, ~1e-9), with temporaries (about 60 floats per pixel) for one
    strip instead of the whole image. None: one pass.
    """
    dilations = tuple(dilations)
    h, w = image.shape[-2:]
    rows = h if strip_pixels is None else max(1, int(strip_pixels) // w)
    if rows >= h:
        return _affinity(image, dilations)
    grow = max(dilations)
    out = image.new_empty((image.shape[0], 1, 8 * len(dilations), h, w))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        e0, e1 = max(0, r0 - grow), min(h, r1 + grow)
        out[..., r0:r1, :] = _affinity(image[:, :, e0:e1], dilations)[..., r0 - e0 : r1 - e0, :]
    return out


def pamr_propagate(
    affinity: torch.Tensor, logits: torch.Tensor, steps: int, dilations: Sequence[int]
) -> torch.Tensor:
    """``steps`` PAMR iterations of ``logits`` ``(1, Q, H, W)`` with the weights of
    :func:`pamr_affinity` ``(1, 1, 8 * len(dilations), H, W)``; returns a new tensor."""
    h, w = logits.shape[-2:]
    mask = logits.contiguous()
    for _ in range(steps):
        acc = torch.zeros_like(mask)
        n = 0
        for d in dilations:
            padded = F.pad(mask, [d] * 4, mode="replicate")
            for oy, ox in _NEIGHBOURS:
                ys, xs = d + oy * d, d + ox * d
                acc.addcmul_(padded[..., ys : ys + h, xs : xs + w], affinity[:, :, n])
                n += 1
        mask = acc
    return mask


def pamr_halo(steps: int, dilations: Sequence[int]) -> int:
    """Receptive field of ``steps`` PAMR iterations, in pixels: ``steps * max(dilations)``.
    Refining a window that extends this far beyond a tile on every side (or to the image
    border) gives the tile the numbers of the whole-image refinement."""
    return int(steps) * max(int(d) for d in dilations)


def pamr(
    image: torch.Tensor,
    logits: torch.Tensor,
    steps: int = 10,
    dilations: Sequence[int] = (8, 16),
    chunk: int = 64,
) -> torch.Tensor:
    """Refine ``logits`` with ``steps`` PAMR iterations guided by ``image``.

    Args:
        image: ``(1, 3, H, W)`` float32 guidance image (NACLIP: normalised pixels).
        logits: ``(1, Q, H', W')`` float32; resized to ``(H, W)`` bilinearly with
            ``align_corners=True`` first (a no-op when already that size), as the reference.
        steps: iterations (>= 0; 0 returns the resized logits).
        dilations: positive neighbour distances in pixels.
        chunk: queries processed at once (channels are independent; memory is a few
            ``chunk * H * W`` float buffers).

    Returns:
        ``(1, Q, H, W)`` float32 refined logits.
    """
    if image.ndim != 4 or logits.ndim != 4 or image.shape[0] != logits.shape[0]:
        raise ValueError("image must be (B, 3, H, W) and logits (B, Q, H', W')")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    dilations = tuple(int(d) for d in dilations)
    if not dilations or min(dilations) < 1:
        raise ValueError(f"dilations must be positive ints, got {dilations!r}")
    with torch.inference_mode():
        size = image.shape[-2:]
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        if steps == 0:
            return logits
        aff = pamr_affinity(image, dilations)  # (B, 1, P, H, W)
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[1], chunk):
            chunk_logits = logits[:, start : start + chunk]
            out[:, start : start + chunk] = pamr_propagate(aff, chunk_logits, steps, dilations)
        return out
