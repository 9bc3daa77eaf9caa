"""Per-user state of the app: :class:`Session`, its prompted objects and the page's
:class:`Settings`. Plain data, no Gradio; one Session per browser session, never shared.

Coordinates: points are ``(x, y)`` image pixels; boxes ``(x0, y0, x1, y1)`` pixels with
``x1, y1`` exclusive; masks bool ``(H, W)`` of the image size.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from ovseg._io import atomic_write
from ovseg.app.tempfiles import make_folder, remove_folder
from ovseg.result import SegmentationResult
from ovseg.structures import Masks

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MODES = ("automatic", "points", "boxes", "scribble")
POINT_ACTIONS = ("new", "add", "remove")  # positive new object / positive or negative refinement
BRUSH_KINDS = ("scribble", "mask")  # strokes on the object / a rough mask of it
MAX_HISTORY = 64

Progress = Callable[..., Any]


@dataclass(frozen=True)
class Settings:
    """What the page's controls say: the class text box, template set and score threshold."""

    classes: str = ""
    templates: str = "imagenet"
    score_threshold: float = 0.0


@dataclass(frozen=True)
class PromptObject:
    """One prompted object: its prompt and SAM's mask for it.

    Attributes:
        kind: ``"points"``, ``"box"``, ``"scribble"`` or ``"mask"``.
        points: ``(x, y)`` pixels; ``labels``: 1 positive, 0 negative, one per point.
        box: ``(x0, y0, x1, y1)`` pixels, ``x1, y1`` exclusive, or None.
        brush: bool (H, W) strokes or rough mask, or None.
        mask: bool (H, W), SAM's mask; ``score``: its predicted IoU.
    """

    kind: str
    mask: np.ndarray
    score: float
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[int, int, int, int] | None = None
    brush: np.ndarray | None = None


@dataclass
class Session:
    """All state of one user: never shared between users.

    Attributes:
        image: RGB uint8 (H, W, 3) or None; ``name``: a file-name stem for downloads.
        objects: prompted objects, oldest first; ``auto``: the automatic run's masks (empty
            when the method's map needs none), or None before it.
        corner: the first corner ``(x, y)`` of a box awaiting its second click, or None.
        history: snapshots ``(objects, auto, corner)`` for undo, oldest first.
        result: the last fused result, or None; ``hidden``: class names not drawn.
        found: the last "find all" instances (:class:`ovseg.app.find.Found`), or None;
            ``found_hidden``: indices of those not drawn.
        downloads: ``{"labels": png path, "json": path}`` of the last result.
        status, warning: the message for the page and whether it reports a problem.
        original_size: ``(H, W)`` of the upload when it was downsized to ``image``, else None.
    """

    image: np.ndarray | None = None
    name: str = "image"
    objects: list[PromptObject] = field(default_factory=list)
    auto: Masks | None = None
    corner: tuple[int, int] | None = None
    history: list[tuple] = field(default_factory=list)
    result: SegmentationResult | None = None
    hidden: set[str] = field(default_factory=set)
    found: Any = None
    found_hidden: set[int] = field(default_factory=set)
    downloads: dict[str, Path] = field(default_factory=dict)
    status: str = ""
    warning: bool = False
    workdir: Path | None = None
    original_size: tuple[int, int] | None = None  # (H, W) of an upload that was downsized
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def say(self, message: str, warning: bool = False) -> Session:
        self.status, self.warning = message, warning
        return self

    def folder(self) -> Path:
        """This session's own temporary folder for downloads (created on first use; see
        :mod:`ovseg.app.tempfiles` for when it goes)."""
        if self.workdir is None or not self.workdir.is_dir():
            self.workdir = make_folder("app")
        return self.workdir

    def close(self) -> None:
        """Delete the session's temporary folder."""
        if self.workdir is not None:
            remove_folder(self.workdir)
            self.workdir = None

    def _snapshot(self) -> None:
        self.history.append((tuple(self.objects), self.auto, self.corner))
        del self.history[:-MAX_HISTORY]


def example_images() -> list[str]:
    """The bundled example images (paths), sorted."""
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    return sorted(str(p) for p in ASSETS.glob("*") if p.suffix.lower() in suffixes)


def file_stem(name: str | None) -> str:
    stem = Path(str(name)).stem if name else "image"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._")
    return stem[:80] or "image"


def fit_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``image`` (RGB uint8) downsized with Pillow's Lanczos filter so that its longer side is
    ``max_side``, and its original ``(H, W)``; an image that fits (or ``max_side`` None)
    comes back as it is, with None."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, None
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)), (h, w)


def save_label_png(result: SegmentationResult, path, size: tuple[int, int] | None) -> Path:
    """:meth:`~ovseg.result.SegmentationResult.save_png`, mapped back to ``size`` ``(H, W)``
    (each pixel takes the label of the nearest segmented pixel) when given."""
    if size is None or tuple(size) == result.shape:
        return result.save_png(path)
    png = result.to_png_image().resize((size[1], size[0]), Image.Resampling.NEAREST)
    info = PngImagePlugin.PngInfo()
    info.add_text("ovseg:classes", json.dumps(result.classes))
    return atomic_write(path, lambda fh: png.save(fh, format="PNG", pnginfo=info))
