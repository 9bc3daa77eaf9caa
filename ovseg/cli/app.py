"""``ovseg app``: launch the interactive web app (Gradio) on a host and port."""

from __future__ import annotations

import argparse
import sys

from ovseg.cli import add_model_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="launch the interactive web app (Gradio)",
        description="Serve the ovseg web app: upload an image, type classes, segment "
        "automatically or with clicks, boxes and scribbles. Models are loaded once "
        "at launch and shared by all visitors; each visitor's image and prompts "
        "stay in their own session.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.0,
        help="initial score threshold in [0, 1] (adjustable in the page)",
    )
    p.add_argument(
        "--points-per-side", type=int, default=None, help="automatic grid density (default 32)"
    )
    p.add_argument(
        "--no-quality-filters",
        action="store_true",
        help="keep every automatic-grid mask (pred_iou_thresh=0, "
        "stability_score_thresh=0); for smoke tests with the tiny random "
        "models, whose masks rarely pass the filters",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also create a temporary public Gradio link"
    )
    p.set_defaults(func=run)


def grid_options(args: argparse.Namespace):
    """The :class:`~ovseg.proposals.grid.GridOptions` asked for on the command line."""
    from ovseg.proposals.grid import GridOptions

    options = {}
    if args.points_per_side is not None:
        options["points_per_side"] = args.points_per_side
    if args.no_quality_filters:
        options.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return GridOptions(**options)


def run(args: argparse.Namespace) -> int:
    from ovseg.pipeline import Segmenter

    if not 0 < args.port < 65536:
        print(f"ovseg app: error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        from ovseg.app import build_app

        segmenter = Segmenter(
            args.sam,
            args.clip,
            args.device,
            random_weights=args.random_weights,
            templates=args.templates,
            scorer=args.scorer,
            score_threshold=args.score_threshold,
            grid=grid_options(args),
        )
        app = build_app(segmenter, models={"sam": str(args.sam), "clip": str(args.clip)})
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as e:
        print(f"ovseg app: error: {e}", file=sys.stderr)
        return 2
    print(
        f"ovseg app: serving on http://{args.host}:{args.port} (Ctrl+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    app.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0
