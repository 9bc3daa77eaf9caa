"""The options shared by the subcommands that build a Segmenter (models, method options,
automatic grid, device) and their checks; every check that does not depend on an image runs
before any model is loaded."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from ovseg.constants import (
    DEFAULT_CLIP,
    DEFAULT_METHOD,
    DEFAULT_SAM,
    HF_TINY,
    REGION_METHOD,
    SAM2_TINY,
    TINY,
)
from ovseg.methods.registry import method_names

GRID_FLAGS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")


def add_model_arguments(
    p: argparse.ArgumentParser,
    scorers: tuple[str, ...] = ("dense", "crop", "both"),
    presets: bool = True,
) -> None:
    """The model options shared by the subcommands that build a Segmenter.

    With ``presets``, ``--quality`` picks a method and its published models (see
    :mod:`ovseg.models.presets`) and the model flags default to None: read the choice with
    :func:`model_choice`. Without, the flags default to the plain defaults.
    """
    from ovseg.models.presets import DEFAULT_QUALITY, PRESETS

    if presets:
        p.add_argument(
            "--quality",
            choices=tuple(PRESETS),
            default=None,
            help="a method with its published models: "
            + "; ".join(f"{k}: {v.method} ({v.published_miou} mIoU)" for k, v in PRESETS.items())
            + f". Default {DEFAULT_QUALITY} when no --sam/--clip/--dino/--method is given; "
            "with any of them, the plain defaults fill the rest",
        )
    p.add_argument(
        "--sam",
        default=None if presets else DEFAULT_SAM,
        help="SAM: vit_b|vit_l|vit_h|sam2.1_hiera_tiny|...|NAME:PATH|tiny-random "
        f"(default {DEFAULT_SAM})",
    )
    p.add_argument(
        "--clip",
        default=None if presets else DEFAULT_CLIP,
        help="CLIP: ARCH/TAG (open_clip), ARCH:PATH, hf:ORG/NAME, or tiny-random "
        f"(default {DEFAULT_CLIP})",
    )
    p.add_argument(
        "--method",
        default=None,
        metavar="NAME",
        help=f"the method: {', '.join(method_names())} (one missing a model it needs names it); "
        f"default: the --quality preset's, {DEFAULT_METHOD} when models are given",
    )
    p.add_argument(
        "--dino",
        default=None,
        metavar="NAME",
        help="DINO model of proxyclip, trident, corrclip: dino_vitb8, dino_vitb16, NAME:PATH "
        "or tiny-random",
    )
    p.add_argument(
        "--bank",
        default=None,
        metavar="BANK",
        help="a memory bank folder (ovseg bank build): turns the best preset into corrclipv2 "
        "(--quality bank), which retrieves from it",
    )
    p.add_argument(
        "--vfm",
        default=None,
        metavar="NAME",
        help="vision foundation model of corrclipv2 and its bank: radiov3 (default), radiov2.5, "
        "dinov2, dinov3, hf:ORG/NAME, NAME:PATH, tiny-random",
    )
    p.add_argument(
        "--aux-clip",
        default=None,
        metavar="CLIP",
        help="corrclipv2's auxiliary CLIP for the bank's second store (ViT-B-16/dfn2b)",
    )
    if presets:
        p.add_argument(
            "--tiny",
            action="store_true",
            help="tiny random stand-ins of the method's models (SAM, CLIP, DINO): the same "
            "method runs on a CPU in seconds, offline, with meaningless labels (a first run, "
            "a smoke test)",
        )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: auto)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights for registered architectures (timing only; meaningless labels)",
    )
    p.add_argument(
        "--scorer",
        default=None if "oracle" not in scorers else "dense",
        choices=scorers,
        help=f"CLIP region scorer of {REGION_METHOD} (default dense: one CLIP pass per image)"
        + (
            "; oracle: each proposal gets its majority ground-truth class"
            if "oracle" in scorers
            else ""
        ),
    )
    p.add_argument(
        "--templates",
        default="imagenet",
        help="prompt templates: imagenet (80, default), simple, photo, none",
    )


def model_choice(args: argparse.Namespace) -> dict:
    """``{"method", "sam", "clip", "dino"}`` from ``--quality`` and the model flags."""
    from ovseg.models.presets import MODEL_KEYS, resolve_models

    given = {k: getattr(args, k) for k in MODEL_KEYS if getattr(args, k, None) is not None}
    tiny = bool(getattr(args, "tiny", False))
    quality = getattr(args, "quality", None)
    bank = getattr(args, "bank", None) is not None
    models = resolve_models(quality, given, tiny=tiny, bank=bank)
    tiny_specs = {TINY, SAM2_TINY, HF_TINY}
    models_given = {k: v for k, v in given.items() if k != "method"}
    if (
        quality is None
        and "method" not in given
        and models_given
        and all(v in tiny_specs for v in models_given.values())
    ):  # tiny models never change the method silently
        from ovseg.models.presets import DEFAULT_QUALITY, PRESETS

        flags = ", ".join(f"--{k}" for k in models_given)
        print(
            f"ovseg: method {models['method']}: {flags} given without --method or --quality "
            f"takes the plain defaults (the default, --quality {DEFAULT_QUALITY}, runs "
            f"{PRESETS[DEFAULT_QUALITY].method}; --tiny runs it with tiny random models)",
            file=sys.stderr,
        )
    return models


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """SAM's automatic-grid options (``--points-per-side`` ...), shared by segment, eval, app."""
    grid = p.add_argument_group(
        "automatic grid (SAM's automatic masks; defaults as SamAutomaticMaskGenerator)"
    )
    grid.add_argument(
        "--points-per-side", type=int, default=None, metavar="N", help="grid points per side (32)"
    )
    grid.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=None,
        metavar="T",
        help="keep masks with predicted IoU >= T (0.88)",
    )
    grid.add_argument(
        "--stability-score-thresh",
        type=float,
        default=None,
        metavar="T",
        help="keep masks with stability >= T (0.95)",
    )
    grid.add_argument(
        "--box-nms-thresh",
        type=float,
        default=None,
        metavar="T",
        help="box NMS IoU threshold, 1 disables (0.7)",
    )
    grid.add_argument(
        "--no-quality-filters",
        action="store_true",
        help="keep every grid mask (--pred-iou-thresh 0 --stability-score-thresh 0)",
    )


def grid_options(args: argparse.Namespace) -> dict:
    """The grid options given on the command line (only those), validated by ``GridOptions``.

    Raises:
        ValueError: a value out of range (e.g. ``--pred-iou-thresh 2``).
    """
    from ovseg.proposals.grid import GridOptions

    options = {k: getattr(args, k) for k in GRID_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "no_quality_filters", False):
        options.setdefault("pred_iou_thresh", 0.0)
        options.setdefault("stability_score_thresh", 0.0)
    GridOptions(**options)  # the library's own checks, once, before any model loads
    return options


def check_device(device: str | None) -> None:
    """Refuse a device that cannot work here before any model loads: a bad name, or CUDA
    asked for where there is none. ``None`` (automatic) always passes."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device must be like cpu, cuda or cuda:0, got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device}: CUDA is not available here (no NVIDIA GPU or driver, or a "
                "CPU-only PyTorch build); use --device cpu or leave --device out"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """The method's options: ``--score-threshold``, ``--threshold``, ``--refine`` and
    ``--option NAME=VALUE`` for any other (the names of the method's config, as in the Python
    API)."""
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="minimum class probability for a mask (a prompt, a refining mask, an object) to "
        "label pixels (the method's default: 0)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="instance score threshold in [0, 1] of a method that finds instances (sam3, "
        "naclip+sam3...; the same as --option threshold=T; the method's default: 0.5)",
    )
    p.add_argument(
        "--refine",
        choices=("masks",),
        default=None,
        help="masks: SAM's automatic masks are painted over the method's map, each taking its "
        "most probable class (grid flags apply)",
    )
    add_option_argument(p)


def add_option_argument(p: argparse.ArgumentParser) -> None:
    """``--option NAME=VALUE`` (repeatable): any option of the method by its name."""
    p.add_argument(
        "--option",
        dest="method_options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_option,
        help="any option of the method by its name, e.g. --option short_side=448 --option "
        "prob_threshold=0.2 (repeatable; values are Python literals or plain words)",
    )


def _option(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. short_side=448; got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip(), parsed


def method_options(args: argparse.Namespace) -> dict:
    """The method options given on the command line: ``--option``s, then the named flags."""
    options = dict(getattr(args, "method_options", None) or [])
    for name in ("score_threshold", "threshold", "refine", "scorer"):
        value = getattr(args, name, None)
        if value is not None and not (name == "scorer" and value == "oracle"):
            options[name] = value
    return options


def method_settings(args: argparse.Namespace, grid_used: bool = False) -> dict:
    """The models, method and options a command line asks for, checked as the Segmenter
    checks them (names, options, values, models the method needs), before anything loads:
    ``{"method", "sam", "clip", "dino", "random_weights", "templates", "options", "grid"}``.
    ``grid_used``: the command runs SAM's grid whatever the method (video keyframes).

    Raises:
        ValueError, TypeError: what is wrong, in words.
    """
    from ovseg.methods.registry import method_class
    from ovseg.models.build import check_sam_spec, sam_family

    models = model_choice(args)
    try:
        cls = method_class(models["method"])
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    threshold = getattr(args, "score_threshold", None)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {threshold}")
    options = method_options(args)
    if getattr(args, "threshold", None) is not None and "threshold" not in cls.options_names():
        raise ValueError(
            f"--threshold is the instance score threshold of a method that finds instances; "
            f"method {models['method']!r} has no option 'threshold'"
        )
    config = cls.configure(None, **options)
    sam = models["sam"]
    check_sam_spec(sam)
    cls.check_specs({**models, "sam_family": sam_family(sam)}, flags=True)
    grid = grid_options(args)
    if grid and not config.refine and not grid_used:
        flags = ", ".join("--" + k.replace("_", "-") for k in grid)
        raise ValueError(
            f"grid options ({flags}) set SAM's automatic masks, which method "
            f"{models['method']!r} does not use: add --refine masks (or --method sam-clip)"
        )
    check_device(getattr(args, "device", None))
    bank = getattr(args, "bank", None)
    if bank is not None:
        if not Path(bank).is_dir():
            raise FileNotFoundError(f"--bank {bank}: no such folder (ovseg bank build makes one)")
    return {
        "method": models["method"],
        "sam": sam,
        "clip": models["clip"],
        "dino": models["dino"],
        "vfm": models["vfm"],
        "aux_clip": models["aux_clip"],
        "bank": None if bank is None else str(Path(bank).resolve()),
        "random_weights": bool(getattr(args, "random_weights", False)),
        "templates": args.templates,
        "options": options,
        "grid": grid,
    }


def build_segmenter(settings: dict, device=None):
    """The :class:`~ovseg.pipeline.Segmenter` of ``settings`` (from :func:`method_settings`;
    models load on first use)."""
    from ovseg.pipeline import Segmenter

    s = settings
    models = {k: s.get(k) for k in ("dino", "vfm", "bank", "aux_clip")}
    return Segmenter(
        s["sam"], s["clip"], device, **models, method=s["method"],
        random_weights=s["random_weights"], templates=s["templates"], **s["options"],
        **s["grid"],
    )  # fmt: skip
