"""The per-pixel methods in ``ovseg bench``: one Segmenter per method (sharing CLIP and each
DINO), each method's sliding windows, and its timed run (pixel probabilities, then the
result). Every method goes through the method protocol; nothing here asks which one it is."""

from __future__ import annotations

import numpy as np

from ovseg.bench.timing import Peak, timed

BENCH_METHODS = ("naclip", "sclip", "clearclip", "proxyclip")


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated dense method names, ``all`` (every one) or ``none``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    from ovseg.methods.registry import method_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    if names == ["all"]:
        return BENCH_METHODS
    known = (*BENCH_METHODS, *(m for m in method_names() if m not in BENCH_METHODS))
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(
            f"unknown method(s) {bad or [text]} in --methods; choose from {', '.join(known)}, "
            "'all' or 'none'"
        )
    return tuple(dict.fromkeys(names))


def build_methods(config, clip, device) -> tuple[dict, dict[str, str]]:
    """One Segmenter per method of ``config.methods``, sharing ``clip`` (and one DINO per
    architecture: ``config.dino``, else each method's reference DINO). Methods that need SAM
    (Trident) get ``config.sam``; the others none (CorrCLIP is given its regions).

    Returns ({name: Segmenter}, {name: error}): a method that cannot be built is reported, not
    fatal, so one failing method does not lose the rest of a long run."""
    import warnings

    from ovseg.methods.registry import method_class
    from ovseg.models.build import build_dino
    from ovseg.pipeline import Segmenter

    segmenters, errors, dinos = {}, {}, {}
    for name in config.methods:
        try:
            cls, spec = method_class(name), None
            if "dino" in cls.needs:
                spec = "tiny-random" if config.tiny else (config.dino or cls.hints["dino"])
                if spec not in dinos:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # random weights: timing
                        dinos[spec] = build_dino(spec, device, random_weights=not config.tiny)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # random weights: timing only
                segmenters[name] = Segmenter(
                    config.sam if "sam" in cls.needs else None,
                    clip,
                    device,
                    method=name,
                    dino=dinos.get(spec),
                    random_weights=not config.tiny,
                )
        except Exception as e:  # noqa: BLE001 - reported in the results, the run goes on
            errors[name] = method_error(e)
    return segmenters, errors


def method_error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def method_rows(config) -> dict[str, tuple]:
    """{row key: (method, method options)}: each method with its defaults, then with each
    ``batch_windows`` value asked for."""
    rows = {}
    for name in config.methods:
        rows[name] = (name, {})
        for b in config.batch_windows:
            rows[f"{name} batch_windows={b}"] = (name, {"batch_windows": b})
    return rows


def windows(seg, shape: tuple[int, int], options: dict) -> dict:
    """The sliding windows a method runs on an image of ``shape`` (from its resize, crop and
    stride) and its windows per forward pass; None where its settings do not say."""
    from ovseg.methods.geometry import imrescale_size, slide_windows

    out = {"windows": None, "batch_windows": None}
    try:
        cfg = seg.config(**options)
        get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
        out["batch_windows"] = get("batch_windows")
        crop = get("slide_crop")
        if crop is None:
            out["windows"] = 1
        else:
            h, w = imrescale_size(*shape, get("short_side"), get("long_cap") or 2048)
            out["windows"] = len(slide_windows(h, w, crop, get("slide_stride")))
    except Exception:  # noqa: BLE001 - informative only
        pass
    return out


def run_method(seg, image, classes, options: dict, device, regions=None) -> dict:
    """One timed dense-method run on ``image``, no cache: pixel probabilities, then labels and
    the result (``segment``, which reuses the probabilities just computed). ``regions``: bool
    masks (N, H, W) for a method that uses regions (CorrCLIP)."""
    if regions is not None:
        options = {**options, "masks": regions}
    seg._probs_cache = None
    if "sam" in seg.method.needs:  # a method with SAM (Trident) pays its encoder every image
        seg.proposer.clear_cache()
    with Peak(device) as peak:
        _, t_probs = timed(lambda: seg.pixel_probabilities(image, classes, **options), device)
        cached = seg._probs_cache
        _, t_labels = timed(lambda: seg.segment(image, classes, **options), device)
    if cached is None or seg._probs_cache is not cached:
        raise RuntimeError(
            "segment() recomputed the probabilities (the Segmenter's cache missed): the labels "
            "time would count the method twice"
        )
    seg._probs_cache = None
    return dict(
        probabilities=t_probs,
        labels=t_labels,
        per_image=t_probs + t_labels,
        peak_mb=peak.peak_mb,
    )


def warmup_methods(methods, rows, errors, image, classes, progress) -> None:
    """One untimed call per method row (first-call costs: text embeddings for the method's
    vocabulary, allocator growth, position-table interpolation); failures are recorded."""
    for key, (name, options) in rows.items():
        if name not in methods or name in errors:
            continue
        progress(f"warm-up {key} (untimed) ...")
        try:
            if "regions" in methods[name].method.needs:  # CorrCLIP: no regions for warm-up
                options = {**options, "masks": np.zeros((0, *image.shape[:2]), bool)}
            methods[name].segment(image, classes, **options)
        except Exception as e:  # noqa: BLE001 - reported in the results
            errors[name] = method_error(e)
            progress(f"  {key} failed: {errors[name]}")
        methods[name]._probs_cache = None
