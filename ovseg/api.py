"""``ovseg.segment``: one call, a :class:`~ovseg.pipeline.Segmenter` cached per models and
construction options, and the quality presets (:mod:`ovseg.models.presets`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ovseg.constants import DEFAULT_CLIP, DEFAULT_SAM
from ovseg.models.build import resolve_device
from ovseg.pipeline import Segmenter
from ovseg.result import SegmentationResult

__all__ = ["default_segmenter", "segment"]

_DEFAULTS: dict[tuple, Segmenter] = {}
_DEFAULTS_LOCK = threading.Lock()
_INIT_OPTIONS = ("random_weights", "templates", "grid", "fused_attention", "bank")


def default_segmenter(sam=DEFAULT_SAM, clip=DEFAULT_CLIP, device=None, **options) -> Segmenter:
    """A Segmenter cached per model choice and construction options (when they are hashable)."""
    key = (sam, clip, str(resolve_device(device)), tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:
        return Segmenter(sam, clip, device, **options)
    with _DEFAULTS_LOCK:
        if key not in _DEFAULTS:
            _DEFAULTS[key] = Segmenter(sam, clip, device, **options)
        return _DEFAULTS[key]


def segment(
    image,
    classes: Sequence[str],
    *,
    quality: str | None = None,
    tiny: bool = False,
    device=None,
    **options,
) -> SegmentationResult:
    """Segment an image into an open vocabulary.

    Args:
        image: a path, a ``PIL.Image``, or a uint8 array (H, W, 3) or (H, W).
        classes: K distinct non-blank names; ``"road; street"`` gives synonyms.
        quality: ``"fast"`` (NACLIP), ``"balanced"`` (Trident) or ``"best"`` (CorrCLIP): a method
            with the models of its published numbers (:mod:`ovseg.models.presets`). With no
            ``sam``, ``clip``, ``dino`` or ``method`` given, ``"best"``; models or a method
            given take precedence (and without ``quality`` the plain defaults fill the rest).
        tiny: the same method with tiny random stand-ins of its models (offline, seconds on a
            CPU, meaningless labels: a first run or a smoke test).
        device: ``"cpu"``, ``"cuda"``...; the Segmenter is cached per models and options.
        **options: ``sam``, ``clip``, ``dino``, ``method`` (see :class:`Segmenter`),
            ``random_weights``, ``grid``, ``fused_attention``; and per call: ``points`` (P, 2)
            ``(x, y)`` pixels, ``point_labels`` (P,) 1/0, ``boxes`` (B, 4) XYXY pixels,
            ``mask_input`` (H, W) rough mask, ``scribble`` (H, W) strokes, ``masks`` (regions
            of CorrCLIP), ``background`` names, ``templates``, the method's options and grid
            options.

    Returns:
        A :class:`~ovseg.result.SegmentationResult`: ``label_map`` int32 (H, W) with class
        indices or ``ovseg.UNLABELED`` (-1), ``confidence`` float32 (H, W), ``segments``.
    """
    from ovseg.models.presets import MODEL_KEYS, resolve_models
    from ovseg.scoring.vocabulary import validate_classes

    validate_classes(classes)
    given = {k: options.pop(k) for k in MODEL_KEYS if k in options}
    models = resolve_models(quality, given, tiny=tiny, bank=options.get("bank") is not None)
    sam, clip = models.pop("sam"), models.pop("clip")
    init = {k: options.pop(k) for k in list(options) if k in _INIT_OPTIONS and k != "templates"}
    init.update(models)
    seg = default_segmenter(sam, clip, device, **init)
    return seg.segment(image, classes, **options)
