"""``ovseg eval``: score a method on a segmentation benchmark and write JSON/markdown reports.

Handlers return an exit code (0 ok, 1 failure); expected errors print one line to stderr.
"""

from __future__ import annotations

import argparse
import sys

from ovseg.cli._args import (
    add_grid_arguments,
    add_model_arguments,
    add_option_argument,
    check_device,
    grid_options,
)
from ovseg.cli._ray_args import add_ray_arguments
from ovseg.eval.datasets import KINDS
from ovseg.eval.runner import PROTOCOL_DEFAULTS, SCORERS

EPILOG = (
    """examples:
  ovseg eval --data ../shared/data/camvid-val --method sam-clip --sam tiny-random \\
      --clip tiny-random --limit 2 --points-per-side 8 --box-nms-thresh 1 \\
      --out runs/camvid_tiny.json    # the tiny random SAM comes with the quality filters off
  ovseg eval --data VOCdevkit/VOC2012 --dataset voc21 --method naclip --out runs/voc21.json
  ovseg eval --data VOCdevkit/VOC2012 --dataset voc21 --method naclip --option pamr_steps=0 \\
      --out runs/voc21_no_pamr.json
  ovseg eval --data ../shared/data/camvid-val --scorer oracle --out runs/camvid_oracle.json
  ovseg eval --data ../shared/data/camvid-val --predictions my_pngs/ --out runs/mine.json

ovseg's protocol (methods without class-name files for the benchmark, e.g. sam-clip), defaults
per benchmark (short side, background threshold): """
    + ", ".join(
        f"{k} ({v['short_side'] or 'as is'}, {v['score_threshold']})"
        for k, v in PROTOCOL_DEFAULTS.items()
    )
    + "."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate on a benchmark (mIoU report)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment every image of a benchmark (or read saved label PNGs) and report "
        "mIoU, per-class IoU, fwIoU, pixel and mean accuracy, with a confusion-matrix plot. "
        "Predictions are cached next to the report, so an interrupted run resumes.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument(
        "--dataset",
        choices=KINDS,
        default=None,
        metavar="KIND",
        help=f"dataset layout, one of: {', '.join(KINDS)} (default: detected)",
    )
    p.add_argument("--split", default="val", help="split to read (default: val)")
    p.add_argument(
        "--ignore-index",
        type=int,
        default=None,
        metavar="V",
        help="label value to ignore for folder/camvid layouts (default 255 / K)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="REPORT.json",
        help="JSON report path; .md, _confusion.png and _cache/ go next to it",
    )
    p.add_argument(
        "--predictions",
        metavar="PRED_DIR",
        default=None,
        help="score label PNGs (value i = class i, 255 = unlabeled, STEM.png; 16-bit with "
        "65535 = unlabeled for ade847/context459) instead of running a model",
    )
    add_model_arguments(p, SCORERS, presets=False)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="P",
        help="minimum class probability for a mask to label pixels "
        "(default: the benchmark's protocol value)",
    )
    p.add_argument(
        "--short-side",
        type=int,
        default=-1,
        metavar="PX",
        help="the method's short_side option where it has one, else the inputs are resized "
        "to this short side; 0 keeps the size (default: the method's or ovseg's per-benchmark "
        "value)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="PX",
        help="sliding-window dense scoring: windows of PX pixels (e.g. 224), stride "
        "half a window (default: one pass over the whole input)",
    )
    add_option_argument(p)
    add_grid_arguments(p)
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="evaluate only the first N images"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_ray_arguments(p, "images (confusion matrices summed across workers)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ovseg.distributed.cli import evaluate_with_ray_options
    from ovseg.eval.runner import evaluate

    try:
        grid = grid_options(args)
        if not args.ray:  # with --ray the device is the workers' (ovseg.distributed.cli)
            check_device(args.device)
        report = evaluate_with_ray_options(args, evaluate)(
            args.data,
            args.out,
            kind=args.dataset,
            split=args.split,
            ignore_index=args.ignore_index,
            predictions=args.predictions,
            sam=args.sam,
            clip=args.clip,
            method=args.method,
            dino=args.dino,
            vfm=args.vfm,
            bank=args.bank,
            aux_clip=args.aux_clip,
            method_options=dict(args.method_options),
            scorer=args.scorer,
            templates=args.templates,
            score_threshold=args.threshold,
            short_side=args.short_side or None,
            grid=grid,
            limit=args.limit,
            device=args.device,
            random_weights=args.random_weights,
            progress=not args.no_progress,
            window=args.window,
        )
    except (FileNotFoundError, ValueError, TypeError, RuntimeError, ModuleNotFoundError) as e:
        print(f"ovseg eval: error: {e}", file=sys.stderr)
        return 1
    from ovseg.eval.report import percent

    print(
        f"{report['dataset']['kind']} ({report['mode']}): mIoU {percent(report['miou'])} over "
        f"{report['counts']['images']} images"
    )
    for kind, path in report["files"].items():
        print(f"  {kind}: {path}")
    return 0
