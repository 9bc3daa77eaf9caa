"""What the page shows for a :class:`~ovseg.app.handlers.Session`: pure functions, no Gradio.

The canvas is the result's overlay (class colours blended on the image, legend panel on the
right) with the prompted objects outlined (the latest in yellow, older ones in white), positive
points in green, negative points in red, brush strokes in translucent red, boxes as rectangles
and a pending box corner as a cross. The image sits at the canvas's top-left corner at full
size, so a click at canvas pixel ``(x, y)`` with ``x < W`` and ``y < H`` is image pixel
``(x, y)``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ovseg.app.find import draw_found, found_labels
from ovseg.app.session import Session
from ovseg.viz import confidence_image, palette

LATEST = (255, 221, 0)
OLDER = (255, 255, 255)
POSITIVE = (40, 200, 70)
NEGATIVE = (230, 40, 40)
BRUSH = (255, 45, 45)


@dataclass
class View:
    """Everything the page displays.

    Attributes:
        canvas: RGB image to show and click on (None before an upload).
        confidence: RGB rendering of the per-pixel confidence (viridis), or None.
        legend: HTML legend: class swatches with areas in %, and the prompted objects' classes.
        classes: the class names of the result; ``visible``: those not hidden.
        labels_png, coco_json: download paths of the last result, or None.
        found, found_visible: labels of the "find all" instances, and of those drawn.
        status, warning: the message and whether it reports a problem.
    """

    canvas: Image.Image | None
    confidence: Image.Image | None
    legend: str
    classes: list[str]
    visible: list[str]
    labels_png: Path | None
    coco_json: Path | None
    status: str
    warning: bool
    found: list[str] = field(default_factory=list)
    found_visible: list[str] = field(default_factory=list)


def render(session: Session | None, alpha: float = 0.5) -> View:
    """The view of ``session`` (None gives the empty page)."""
    if session is None or session.image is None:
        status = session.status if session is not None else ""
        return View(
            None,
            None,
            "",
            [],
            [],
            None,
            None,
            status,
            bool(session is not None and session.warning),
        )
    result = session.result
    if result is None:
        canvas = Image.fromarray(session.image)
        confidence, classes, visible = None, [], []
    else:
        hidden = [i for i, c in enumerate(result.classes) if c in session.hidden]
        canvas = result.overlay(alpha=alpha, legend=True, hidden=hidden)
        confidence = confidence_image(result.confidence, cmap="viridis")
        classes = list(result.classes)
        visible = [c for c in classes if c not in session.hidden]
    canvas = draw_prompts(draw_found(canvas.convert("RGB"), session), session)
    return View(
        canvas,
        confidence,
        legend_html(session),
        classes,
        visible,
        session.downloads.get("labels"),
        session.downloads.get("json"),
        session.status,
        session.warning,
        found_labels(session),
        [t for i, t in enumerate(found_labels(session)) if i not in session.found_hidden],
    )


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels on the inner boundary of ``mask``, two pixels thick (bool (H, W))."""
    inner = mask.copy()
    for _ in range(2):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def draw_prompts(canvas: Image.Image, session: Session) -> Image.Image:
    """Outline each prompted object's mask and draw its points and box on ``canvas`` (RGB,
    image at the top-left). Returns a new image."""
    out = np.array(canvas)
    h, w = session.image.shape[:2]
    count = len(session.objects)
    for obj in session.objects:
        if obj.brush is not None:
            part = out[:h, :w]
            part[obj.brush] = (part[obj.brush] // 2 + np.array(BRUSH) // 2).astype(np.uint8)
    for i, obj in enumerate(session.objects):
        colour = LATEST if i == count - 1 else OLDER
        out[:h, :w][_outline(obj.mask)] = colour
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    r = max(4, min(h, w) // 70)
    for i, obj in enumerate(session.objects):
        colour = LATEST if i == count - 1 else OLDER
        if obj.box is not None:
            x0, y0, x1, y1 = obj.box
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        for (x, y), label in zip(obj.points, obj.labels, strict=True):
            fill = POSITIVE if label == 1 else NEGATIVE
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=2)
    if session.corner is not None:
        x, y = session.corner
        draw.line([x - 2 * r, y, x + 2 * r, y], fill=LATEST, width=2)
        draw.line([x, y - 2 * r, x, y + 2 * r], fill=LATEST, width=2)
    return image


def object_classes(session: Session) -> list[tuple[str | None, float]]:
    """Per prompted object: the class that labels most of its pixels and that class's mean
    confidence there, or ``(None, 0.0)`` when no pixel of it is labeled."""
    result, out = session.result, []
    for obj in session.objects:
        if result is None:
            out.append((None, 0.0))
            continue
        labels = result.label_map[obj.mask]
        labels = labels[labels >= 0]
        if labels.size == 0:
            out.append((None, 0.0))
            continue
        best = int(np.bincount(labels).argmax())
        conf = float(result.confidence[obj.mask][result.label_map[obj.mask] == best].mean())
        out.append((result.classes[best], conf))
    return out


def legend_html(session: Session) -> str:
    """An HTML legend: one row per class (swatch, name, area %), hidden classes struck out,
    then the class of each prompted object."""
    result = session.result
    rows = []
    if result is not None:
        colours = palette(len(result.classes))
        areas = result.areas()
        for i, name in sorted(enumerate(result.classes), key=lambda t: -areas[t[1]]):
            hex_colour = "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colours[i]))
            text = f"{html.escape(name)} {100 * areas[name]:.1f}%"
            if name in session.hidden:
                text = f"<s>{text}</s> (hidden)"
            rows.append(
                f'<li data-class="{html.escape(name, quote=True)}">'
                f'<span style="display:inline-block;width:0.9em;height:0.9em;'
                f'background:{hex_colour};border:1px solid #000;margin-right:0.4em">'
                f"</span>{text}</li>"
            )
    objects = []
    for k, (name, conf) in enumerate(object_classes(session), start=1):
        label = "unlabeled" if name is None else f"{html.escape(name)} ({conf:.2f})"
        objects.append(f"<li>object {k} ({session.objects[k - 1].kind}): {label}</li>")
    parts = []
    if rows:
        parts.append(f'<b>Classes (area)</b><ul class="ovseg-classes">{"".join(rows)}</ul>')
    if objects:
        parts.append(f'<b>Prompted objects</b><ul class="ovseg-objects">{"".join(objects)}</ul>')
    return "".join(parts) or "<i>No labels yet.</i>"
