"""Colours, label-map overlays with a legend, and confidence maps.

Label maps are ``int32`` arrays ``(H, W)``: value ``i`` in ``[0, K)`` is class
``i``, ``-1`` is unlabeled. Class ``i`` is always drawn with ``palette(K)[i]``,
the same colour the PNG export stores in its palette.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovseg.constants import UNLABELED
from ovseg.image import load_image

__all__ = ["palette", "colorize", "overlay", "confidence_image"]

_MAX_COLOURS = (1 << 24) - 1


def palette(n: int) -> np.ndarray:
    """Return ``n`` distinct colours as a ``uint8`` array ``(n, 3)``, deterministic.

    Colour ``i`` is entry ``i + 1`` of the Pascal VOC bit-interleaved colormap
    (entry 0, black, is skipped so that black stays free for "unlabeled"). The
    map is a bijection on 24-bit colours, so any ``n < 2**24`` gives distinct
    colours, and ``palette(n)`` is a prefix of ``palette(n + 1)``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int; got {type(n).__name__}")
    if not 0 <= n <= _MAX_COLOURS:
        raise ValueError(f"n must be in [0, {_MAX_COLOURS}]; got {n}")
    idx = np.arange(1, n + 1, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        for ch in range(3):
            out[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    return out.astype(np.uint8)


def colorize(label_map: np.ndarray, n_classes: int) -> np.ndarray:
    """Render a label map ``(H, W)`` as RGB ``uint8`` ``(H, W, 3)``; unlabeled (-1) is black."""
    labels = _check_labels(label_map, n_classes)
    lut = np.zeros((n_classes + 1, 3), dtype=np.uint8)
    lut[1:] = palette(n_classes)
    return lut[labels + 1]


def overlay(
    image: Any,
    label_map: np.ndarray,
    classes: Sequence[str],
    *,
    alpha: float = 0.5,
    legend: bool = True,
    hidden: Iterable[int] = (),
    confidence: np.ndarray | None = None,
    boundaries: bool = True,
) -> Image.Image:
    """Blend class colours onto ``image`` and optionally add a legend panel on the right.

    Args:
        image: anything :func:`ovseg.image.load_image` accepts, of size ``(H, W)``.
        label_map: integer ``(H, W)``, values in ``[-1, len(classes))``.
        classes: class names; ``len(classes)`` fixes the palette.
        alpha: colour weight in ``[0, 1]``; ``out = (1 - a) * image + a * colour``.
        legend: add a panel listing each drawn class with its swatch and its area
            in percent of the image, largest first.
        hidden: class indices not drawn (left as the image) and not listed.
        confidence: optional float ``(H, W)`` in ``[0, 1]``; the per-pixel weight
            becomes ``alpha * confidence``, so unsure pixels fade out.
        boundaries: paint the one-pixel edge of each drawn region in its colour at
            full opacity.

    Returns:
        RGB ``PIL.Image``: ``(W, H)`` without legend, wider with it (taller too
        when the legend has more rows than fit). Unlabeled and hidden pixels keep
        their exact input values.
    """
    rgb = load_image(image)
    height, width = rgb.shape[:2]
    labels = _check_labels(label_map, len(classes))
    if labels.shape != (height, width):
        raise ValueError(f"label_map shape {labels.shape} != image shape {(height, width)}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    hidden_set = {int(h) for h in hidden}
    colours = palette(len(classes))

    visible = labels >= 0
    if hidden_set:
        visible &= ~np.isin(labels, sorted(hidden_set))
    weight = np.full((height, width), float(alpha), dtype=np.float32)
    if confidence is not None:
        conf = _check_confidence(confidence)
        if conf.shape != (height, width):
            raise ValueError(f"confidence shape {conf.shape} != image shape {(height, width)}")
        weight *= conf
    if boundaries:
        weight[visible & _edges(labels)] = 1.0
    weight = np.where(visible, weight, 0.0)[..., None]
    colour = colours[np.clip(labels, 0, None)] if len(classes) else np.zeros_like(rgb)
    blended = rgb * (1.0 - weight) + colour * weight
    out = np.where(visible[..., None], np.round(blended), rgb).astype(np.uint8)
    result = Image.fromarray(out)
    if not legend:
        return result
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(classes))
    rows = [
        (int(i), float(counts[i]) / (height * width))
        for i in np.argsort(-counts, kind="stable")
        if counts[i] > 0 and int(i) not in hidden_set
    ]
    return _add_legend(result, rows, classes, colours)


def confidence_image(confidence: np.ndarray, cmap: str | None = None) -> Image.Image:
    """Render a float ``(H, W)`` map in ``[0, 1]`` as an image.

    Without ``cmap``: greyscale ``L`` image, ``round(255 * c)`` (white = sure).
    With ``cmap`` (a matplotlib colormap name such as ``"viridis"``): RGB image.
    """
    conf = _check_confidence(confidence)
    if cmap is None:
        return Image.fromarray(np.round(conf * 255.0).astype(np.uint8))
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError as e:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from e
    rgba = cm(conf, bytes=True)
    return Image.fromarray(np.ascontiguousarray(rgba[..., :3]))


def _check_labels(label_map: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"label_map must be 2-D (H, W); got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"label_map must hold integers; got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < UNLABELED or labels.max() >= n_classes):
        raise ValueError(
            f"label_map values must be in [-1, {n_classes}); found [{labels.min()}, {labels.max()}]"
        )
    return labels


def _check_confidence(confidence: np.ndarray) -> np.ndarray:
    conf = np.asarray(confidence, dtype=np.float32)
    if conf.ndim != 2:
        raise ValueError(f"confidence must be 2-D (H, W); got shape {conf.shape}")
    if conf.size and (not np.isfinite(conf).all() or conf.min() < 0.0 or conf.max() > 1.0):
        raise ValueError(
            f"confidence must be finite and in [0, 1]; found [{conf.min()}, {conf.max()}]"
        )
    return conf


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a 4-neighbour (bool ``(H, W)``)."""
    edge = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _add_legend(
    canvas: Image.Image,
    rows: list[tuple[int, float]],
    classes: Sequence[str],
    colours: np.ndarray,
) -> Image.Image:
    width, height = canvas.size
    size = int(np.clip(height / 28, 11, 22))
    font = _font(size)
    pad, swatch, row_h = size // 2, size, int(size * 1.5)
    texts = [f"{classes[i]}  {100.0 * frac:.1f}%" for i, frac in rows] or ["(nothing labeled)"]
    probe = ImageDraw.Draw(canvas)
    text_w = max(int(probe.textlength(t, font=font)) for t in texts)
    panel_w = pad * 3 + swatch + text_w
    panel_h = pad * 2 + row_h * len(texts)
    out = Image.new("RGB", (width + panel_w, max(height, panel_h)), (255, 255, 255))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(texts):
        y = pad + r * row_h
        x = width + pad
        if rows:
            fill = tuple(int(c) for c in colours[rows[r][0]])
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=fill, outline=(0, 0, 0))
        draw.text((x + swatch + pad, y), text, fill=(0, 0, 0), font=font)
    return out
