"""The app's "find all" box: phrases in, every instance of each phrase out, listed with its
score and toggled on the overlay.

It is offered only when the app's segmenter has a method that finds instances itself
(:attr:`ovseg.methods.protocol.Method.finds_instances`, e.g. ``method="sam3"``):
:func:`available` asks the method protocol. :func:`find_all` and :func:`set_found_visible` are
handlers like those of :mod:`ovseg.app.handlers` (a session in, the same session out; user
mistakes become messages); :func:`draw_found` is what the canvas shows of them.

Instances are listed by score, highest first, as ``"#1 car 0.87"``; each is drawn as its mask
blended with its own colour and outlined, unless hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ovseg.app.session import Session
from ovseg.scoring.vocabulary import parse_classes, validate_classes
from ovseg.viz import palette

__all__ = ["Found", "available", "draw_found", "find_all", "found_labels", "set_found_visible"]


@dataclass(frozen=True)
class Found:
    """The instances of one "find all" query, highest score first.

    Attributes:
        phrases: the phrases as typed (``;`` joins synonyms).
        class_index: int64 ``(N,)``, the phrase of each instance.
        score: float32 ``(N,)`` in [0, 1], the method's instance score, descending.
        mask: bool ``(N, H, W)`` at the image size.
    """

    phrases: tuple[str, ...]
    class_index: np.ndarray
    score: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.score.shape[0])


def available(segmenter) -> bool:
    """Whether the segmenter's method finds instances (the box is shown only then)."""
    return bool(segmenter.method.finds_instances)


def found_labels(session: Session) -> list[str]:
    """One label per found instance, ``"#i phrase score"`` (i from 1, by score)."""
    found = session.found
    if found is None:
        return []
    return [
        f"#{i + 1} {found.phrases[int(c)]} {s:.2f}"
        for i, (c, s) in enumerate(zip(found.class_index, found.score, strict=True))
    ]


def find_all(segmenter, session: Session | None, phrases: str, threshold: float | None = None):
    """Every instance of each phrase in ``phrases`` (comma- or newline-separated) on the
    session's image, through ``segmenter.instances`` with the instance score ``threshold`` in
    [0, 1] (None: the method's own); all are shown. Empty ``phrases`` clears them."""
    if session is None or session.image is None:
        return (session or Session()).say("Upload an image first.", warning=True)
    with session.lock:
        session.found, session.found_hidden = None, set()
        if not available(segmenter):
            return session.say(
                f"Method {segmenter.method.name!r} finds no instances of its own.", warning=True
            )
        try:
            names = validate_classes(parse_classes(phrases or ""))
            options = {}
            if threshold is not None:
                threshold = float(threshold)
                if not 0.0 <= threshold <= 1.0:
                    raise ValueError(f"threshold must be in [0, 1], got {threshold}")
                options["threshold"] = threshold
        except (ValueError, TypeError) as e:
            if not (phrases or "").strip():
                return session.say("Type phrases to find, e.g. 'car, traffic light'.")
            return session.say(f"Phrases: {e}", warning=True)
        try:
            got = segmenter.instances(session.image, names, **options)
        except (ValueError, TypeError) as e:
            return session.say(f"Could not find instances: {e}", warning=True)
        order = np.argsort(-np.asarray(got.score, np.float64), kind="stable")
        session.found = Found(
            tuple(names),
            np.asarray(got.class_index, np.int64)[order],
            np.asarray(got.score, np.float32)[order],
            np.asarray(got.mask, bool)[order],
        )
        counts = np.bincount(session.found.class_index, minlength=len(names))
        listed = ", ".join(f"{int(n)} {name}" for name, n in zip(names, counts, strict=True))
        return session.say(f"Found {len(session.found)} instances: {listed}.")


def set_found_visible(session: Session | None, visible: Sequence[str]) -> Session:
    """Draw only the found instances whose labels (:func:`found_labels`) are in ``visible``."""
    session = session or Session()
    with session.lock:
        keep = set(visible)
        session.found_hidden = {i for i, t in enumerate(found_labels(session)) if t not in keep}
        return session


def draw_found(canvas: Image.Image, session: Session, alpha: float = 0.5) -> Image.Image:
    """``canvas`` (RGB, image at the top-left) with each visible found instance blended in its
    own colour (``alpha``) and outlined in white. Returns a new image."""
    found = session.found
    if found is None or len(found) == 0:
        return canvas
    out = np.array(canvas.convert("RGB"))
    h, w = found.mask.shape[1:]
    part = out[:h, :w]
    colours = palette(len(found))
    for i in reversed(range(len(found))):  # the highest score drawn last, on top
        if i in session.found_hidden:
            continue
        m = found.mask[i]
        blend = (1 - alpha) * part[m] + alpha * colours[i].astype(np.float64)
        part[m] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
        inner = m.copy()
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        part[m & ~inner] = 255
    return Image.fromarray(out)
