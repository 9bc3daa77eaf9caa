"""The app's logic as plain functions: a per-user :class:`Session` in, the same session out.

Every handler takes the shared :class:`~ovseg.pipeline.Segmenter` (guarded by its ``lock``),
the user's :class:`Session` (``None`` starts a new one) and the page's :class:`Settings`, and
returns the session with ``status`` set to a readable message (``warning`` is True when the
message reports a problem). User mistakes never raise: they become messages.

Speed: uploading computes the SAM image embedding once (the proposer caches it by content);
a click, box or scribble decodes only its own object. The method keeps its per-image work (its
map; ``sam-clip``: each region's CLIP embedding), so changing the classes, templates or
threshold re-runs only the text side and the fusion.

Composition: the method's map, then the automatic proposals (when its ``refine`` option asks
for them) cut by the union of the prompted objects, then the prompted objects, painted over it
by :meth:`ovseg.pipeline.Segmenter.label`.

Coordinates: clicks are ``(x, y)`` image pixels (integers, as the browser reports them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ovseg.app.session import (
    BRUSH_KINDS,
    MODES,
    POINT_ACTIONS,
    Progress,
    PromptObject,
    Session,
    Settings,
    file_stem,
    fit_side,
    save_label_png,
)
from ovseg.image import load_image
from ovseg.scoring.vocabulary import parse_classes, validate_classes
from ovseg.structures import Masks


def upload(
    segmenter,
    session: Session | None,
    image,
    name: str | None = None,
    progress: Progress | None = None,
    max_side: int | None = None,
) -> Session:
    """Start over with a new image: a path, PIL image or array (None clears the session).

    Computes the SAM embedding now (cached by content), so later prompts cost only the decoder.
    An image whose longer side is above ``max_side`` is segmented downsized to it (the page
    says so; the label PNG download is mapped back to the upload's size).
    """
    if session is not None:
        session.close()
    session = Session()
    with session.lock:
        if image is None:
            return session.say(
                "Upload an image, paste one, take a webcam shot, or pick an example."
            )
        if progress is not None:
            progress(0.1, desc="SAM: image embedding")
        try:
            array, session.original_size = fit_side(load_image(image), max_side)
            session.image = segmenter.set_image(array)
        except (ValueError, TypeError, FileNotFoundError, OSError) as e:
            return session.say(f"Could not read this image: {e}", warning=True)
        session.name = file_stem(
            name if name is not None else (image if isinstance(image, (str, os.PathLike)) else None)
        )
        h, w = session.image.shape[:2]
        size = f"{w}x{h}"
        if session.original_size is not None:
            big = "x".join(map(str, session.original_size[::-1]))
            size = f"{big}, segmented at {size}: above {max_side} px; label PNGs are {big}"
        return session.say(
            f"Loaded {session.name} ({size}). Type classes, then run automatic "
            "mode or click on objects."
        )


def _need_image(session: Session | None) -> Session | None:
    """The session if it holds an image, else None."""
    if session is None or session.image is None:
        return None
    return session


def _no_image(session: Session | None) -> Session:
    return (session or Session()).say("Upload an image first.", warning=True)


def run_automatic(
    segmenter, session: Session | None, settings: Settings, progress: Progress | None = None
) -> Session:
    """Propose masks with the automatic grid, embed each, and label them all."""
    if _need_image(session) is None:
        return _no_image(session)
    with session.lock:
        if progress is not None:
            progress(0.05, desc="SAM: automatic grid proposals")
        h, w = session.image.shape[:2]
        refine = segmenter.config().refine
        if refine:
            masks = segmenter.propose(session.image)
        else:  # the method's map labels every pixel: no grid
            masks = Masks(np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros((0, 4)))
        session._snapshot()
        session.auto, session.corner = masks, None
        if progress is not None:
            progress(0.5, desc=f"{segmenter.method.name}: labelling")
        _refresh(segmenter, session, settings)
        if not refine:
            if not session.warning:
                session.say(f"Automatic mode ({segmenter.method.name}): {session.status}")
        elif len(masks) == 0 and not session.warning:
            session.say(
                "The automatic grid kept no masks (its quality filters removed them "
                "all). Click on objects instead.",
                warning=True,
            )
        elif not session.warning:
            session.say(f"Automatic mode: {len(masks)} proposals. {session.status}")
        return session


def click(
    segmenter,
    session: Session | None,
    settings: Settings,
    mode: str,
    x: float,
    y: float,
    point: str = "new",
) -> Session:
    """A click at ``(x, y)`` image pixels.

    ``mode="points"``: ``point="new"`` starts a new object from a positive point, ``"add"``
    adds a positive point to the last object, ``"remove"`` a negative one.
    ``mode="boxes"``: the first click sets a corner, the second the opposite corner.
    """
    if _need_image(session) is None:
        return _no_image(session)
    with session.lock:
        h, w = session.image.shape[:2]
        if mode not in ("points", "boxes"):
            return session.say(
                f"Clicks prompt in points or boxes mode (now: {mode}).", warning=True
            )
        if point not in POINT_ACTIONS:
            raise ValueError(f"point must be one of {POINT_ACTIONS}, got {point!r}")
        if not (0 <= x < w and 0 <= y < h):
            return session.say("Click on the image itself (not on the legend).", warning=True)
        xi, yi = int(x), int(y)
        if mode == "boxes":
            if session.corner is None:
                session._snapshot()
                session.corner = (xi, yi)
                return session.say(f"Box corner at ({xi}, {yi}): click the opposite corner.")
            (cx, cy), session.corner = session.corner, None
            box = (min(cx, xi), min(cy, yi), max(cx, xi) + 1, max(cy, yi) + 1)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                session.history.pop()
                return session.say(
                    "That box is too thin: click two opposite corners.", warning=True
                )
            count = len(session.objects)
            obj = PromptObject("box", None, 0.0, box=box)
            _add(segmenter, session, settings, obj, new=True, snapshot=False)
            if len(session.objects) == count and session.history:
                session.history.pop()  # the box failed: forget its first corner's snapshot
            return session
        if point == "new" or not session.objects:
            if point == "remove":
                return session.say(
                    "A negative point removes area from an object: add an object first.",
                    warning=True,
                )
            obj = PromptObject("points", None, 0.0, points=((x, y),), labels=(1,))
            return _add(segmenter, session, settings, obj, new=True)
        last = session.objects[-1]
        label = 1 if point == "add" else 0
        obj = replace(last, points=(*last.points, (x, y)), labels=(*last.labels, label))
        return _add(segmenter, session, settings, obj, new=False)


def brush_mask(editor_value: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The painted pixels of an image-editor value as bool (H, W), or None if nothing is painted.

    ``editor_value`` is a ``{"background", "layers", "composite"}`` dict whose layers are RGBA
    arrays (alpha > 0 = painted), or a bool/number (H, W) or (H, W, C) array (non-zero =
    painted). A drawing of another size is rescaled (nearest) to ``shape``.
    """
    if editor_value is None:
        return None
    if isinstance(editor_value, dict):
        layers = [
            np.asarray(layer) for layer in editor_value.get("layers") or [] if layer is not None
        ]
        if not layers:
            return None
        painted = np.zeros(layers[0].shape[:2], bool)
        for layer in layers:
            if layer.shape[:2] != painted.shape:
                raise ValueError(
                    f"editor layers differ in size: {layer.shape[:2]} vs {painted.shape}"
                )
            painted |= (
                layer[..., 3] > 0
                if layer.ndim == 3 and layer.shape[2] == 4
                else (layer.reshape(*layer.shape[:2], -1) > 0).any(-1)
            )
    else:
        painted = np.asarray(editor_value)
        painted = (painted > 0).any(-1) if painted.ndim == 3 else painted > 0
    if painted.ndim != 2:
        raise ValueError(f"a drawing must be (H, W) or (H, W, C); got shape {painted.shape}")
    if painted.shape != tuple(shape):
        from PIL import Image

        resized = Image.fromarray(painted).resize((shape[1], shape[0]), Image.NEAREST)
        painted = np.asarray(resized, dtype=bool)
    return painted if painted.any() else None


def add_brush(
    segmenter, session: Session | None, settings: Settings, painted: Any, kind: str = "scribble"
) -> Session:
    """A new object from brush strokes drawn on it (``kind="scribble"``) or a rough mask of it
    (``kind="mask"``). ``painted`` is what :func:`brush_mask` accepts."""
    if _need_image(session) is None:
        return _no_image(session)
    if kind not in BRUSH_KINDS:
        raise ValueError(f"kind must be one of {BRUSH_KINDS}, got {kind!r}")
    with session.lock:
        try:
            strokes = brush_mask(painted, session.image.shape[:2])
        except ValueError as e:
            return session.say(f"Could not read the drawing: {e}", warning=True)
        if strokes is None:
            return session.say("Draw on the object with the brush first.", warning=True)
        obj = PromptObject(kind, None, 0.0, brush=strokes)
        return _add(segmenter, session, settings, obj, new=True)


def _decode(segmenter, image: np.ndarray, obj: PromptObject) -> Masks:
    prompt: dict[str, Any] = {}
    if obj.points:
        prompt.update(
            points=np.asarray(obj.points, np.float32), point_labels=np.asarray(obj.labels, np.int32)
        )
    if obj.box is not None:
        prompt["boxes"] = np.asarray([obj.box], np.float32)
    if obj.kind == "scribble":
        prompt["scribble"] = obj.brush
    elif obj.kind == "mask":
        prompt["mask_input"] = obj.brush
    return segmenter.propose(image, **prompt)


def _add(
    segmenter,
    session: Session,
    settings: Settings,
    obj: PromptObject,
    new: bool,
    snapshot: bool = True,
) -> Session:
    """Decode and embed ``obj`` alone, then add it (or replace the last object) and relabel.

    A box's snapshot is taken at its first corner (``snapshot=False`` here), so that one undo
    removes the whole box."""
    try:
        masks = _decode(segmenter, session.image, obj)
    except (ValueError, TypeError) as e:
        return session.say(f"Could not use this prompt: {e}", warning=True)
    if len(masks) == 0 or not masks.masks[0].any():
        return session.say("SAM found no object for this prompt; try another spot.", warning=True)
    obj = replace(obj, mask=masks.masks[0], score=float(masks.scores[0]))
    if snapshot:
        session._snapshot()
    session.objects = [*session.objects, obj] if new else [*session.objects[:-1], obj]
    _refresh(segmenter, session, settings)
    if not session.warning:
        what = "added" if new else "refined"
        session.say(f"Object {len(session.objects)} {what} ({obj.kind}). {session.status}")
    return session


def undo(segmenter, session: Session | None, settings: Settings) -> Session:
    """Undo the last prompt (a point, box, scribble or automatic run)."""
    if session is None or not session.history:
        return (session or Session()).say("Nothing to undo.")
    with session.lock:
        objects, session.auto, session.corner = session.history.pop()
        session.objects = list(objects)
        _refresh(segmenter, session, settings)
        if not session.warning:
            session.say(f"Undone. {session.status}")
        return session


def clear(segmenter, session: Session | None, settings: Settings) -> Session:
    """Remove every prompt and the automatic proposals; keep the image."""
    if session is None:
        return Session().say("Nothing to clear.")
    with session.lock:
        session.objects, session.auto, session.corner, session.history = [], None, None, []
        _refresh(segmenter, session, settings)
        return session.say(
            "Cleared all prompts." if session.image is not None else "Upload an image first."
        )


def refresh(segmenter, session: Session | None, settings: Settings) -> Session:
    """Relabel after a change of classes, templates or threshold (no SAM, no CLIP image pass)."""
    if session is None:
        return Session()
    with session.lock:
        _refresh(segmenter, session, settings)
        return session


def set_visible(session: Session | None, visible: Sequence[str]) -> Session:
    """Draw only the classes named in ``visible`` (the others are hidden, not removed)."""
    session = session or Session()
    with session.lock:
        classes = session.result.classes if session.result is not None else []
        session.hidden = {c for c in classes if c not in set(visible)}
        return session


def mode_changed(session: Session | None, mode: str) -> Session:
    """Switching modes drops a half-drawn box."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    session = session or Session()
    session.corner = None
    return session


def _refresh(segmenter, session: Session, settings: Settings) -> None:
    """Label every kept region with the current classes and write the downloads."""
    session.result, session.downloads = None, {}
    session.say("")
    if session.image is None:
        return
    if not session.objects and session.auto is None:
        return
    try:
        classes = validate_classes(parse_classes(settings.classes or ""))
        vocab = segmenter.vocabulary(classes, templates=settings.templates)
        threshold = float(settings.score_threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score threshold must be in [0, 1], got {threshold}")
    except (ValueError, TypeError) as e:
        session.say(
            f"Classes: {e}. Type names separated by commas or new lines "
            "(';' joins synonyms, e.g. 'road; street, car, sky').",
            warning=True,
        )
        return
    masks, scores = [], []
    if session.auto is not None and len(session.auto):
        cut = session.auto.masks
        if session.objects:
            cut = cut & ~np.logical_or.reduce([o.mask for o in session.objects])
        masks.append(cut)
        scores.append(session.auto.scores)
    if session.objects:  # painted last: a prompted object wins its pixels
        masks.append(np.stack([o.mask for o in session.objects]))
        scores.append(np.array([o.score for o in session.objects], np.float32))
    objects = Masks.from_masks(np.concatenate(masks), np.concatenate(scores)) if masks else None
    try:
        config = segmenter.config(score_threshold=threshold)
        result = segmenter.label(session.image, vocab, config, objects=objects)
    except (ValueError, TypeError) as e:
        session.say(f"Could not label this image: {e}", warning=True)
        return
    session.result = result
    session.hidden &= set(result.classes)
    folder = session.folder()
    session.downloads = {
        "labels": save_label_png(
            result, folder / f"{session.name}_labels.png", session.original_size
        ),
        "json": result.save_json(
            folder / f"{session.name}.json", file_name=f"{session.name}_labels.png"
        ),
    }
    labeled = float((result.label_map >= 0).mean())
    session.say(f"{len(result.segments)} segments, {100 * labeled:.0f}% of the image labeled.")
