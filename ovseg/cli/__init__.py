"""The ``ovseg`` command line: ``ovseg segment | eval | weights | app | bench | video | cache``.

Each subcommand lives in its own module exposing ``register(subparsers)``. The options shared
by several subcommands (models, automatic grid, device) and their checks live here; every
check that does not depend on an image runs before any model is loaded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ovseg.constants import DEFAULT_CLIP, DEFAULT_METHOD, DEFAULT_SAM, REGION_METHOD

SUBCOMMANDS = ("segment", "eval", "weights", "app", "bench", "video", "cache")
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
        help=f"per-pixel method: {DEFAULT_METHOD}, sclip, clearclip, proxyclip, trident, "
        f"corrclip (these three need --dino), or {REGION_METHOD} (SAM's automatic masks, each "
        f"scored by CLIP); default: the --quality preset's, {DEFAULT_METHOD} when models are given",
    )
    p.add_argument(
        "--dino",
        default=None,
        metavar="NAME",
        help="DINO model of proxyclip, trident, corrclip: dino_vitb8, dino_vitb16, NAME:PATH "
        "or tiny-random",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: auto)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights for registered architectures (timing only; meaningless labels)",
    )
    p.add_argument(
        "--scorer",
        default="dense",
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
    return resolve_models(getattr(args, "quality", None), given)


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


def build_parser() -> argparse.ArgumentParser:
    from ovseg import __version__

    parser = argparse.ArgumentParser(
        prog="ovseg", description="Open-vocabulary segmentation: SAM proposals scored by CLIP."
    )
    parser.add_argument("--version", action="version", version=f"ovseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"ovseg.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"ovseg.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # A subcommand with ``intermixed`` set takes positionals placed after its options too
        # (``ovseg segment a.jpg --classes road -o out b.jpg``); anything else is an error.
        target = getattr(args, "intermixed", None)
        if target is None or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, target, [*getattr(args, target), *extra])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # subcommands with something to say about it catch it first
        print(f"ovseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`ovseg weights list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
