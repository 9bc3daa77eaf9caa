"""``ovseg segment IMAGE_OR_FOLDER... --classes ... -o OUT_DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ovseg.cli import add_model_arguments

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images or folders into an open vocabulary",
        description="Per image, writes NAME_labels.png (class i = value i, 255 = unlabeled), "
        "NAME_overlay.png and NAME.json (COCO-style RLE segments).",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument(
        "--classes",
        required=True,
        help='comma- or newline-separated names; ";" joins synonyms, e.g. '
        '"road; street, red truck, sky"',
    )
    p.add_argument("-o", "--out", required=True, help="output folder (created)")
    p.add_argument("--points", help='JSON list of [x, y] pixels, e.g. "[[120, 80]]"')
    p.add_argument("--point-labels", help="JSON list of 1 (positive) / 0 (negative)")
    p.add_argument("--boxes", help="JSON list of [x0, y0, x1, y1] pixels")
    p.add_argument("--background", default="", help="comma-separated background names")
    add_model_arguments(p)
    p.add_argument("--score-threshold", type=float, default=0.0)
    p.add_argument("--points-per-side", type=int, default=None, help="automatic grid density")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _json_arg(text: str | None, name: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{name} must be JSON, e.g. [[10, 20]]: {e}") from e


def collect_images(inputs: list[str]) -> list[Path]:
    """Files as given, plus the image files (by suffix, sorted) of each folder.

    Raises FileNotFoundError for a folder without images."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(
                    f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}"
                )
            files.extend(found)
        else:
            files.append(path)  # a missing or unreadable file is reported when it is read
    return files


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ovseg.pipeline import Segmenter
    from ovseg.scoring.vocabulary import parse_classes, validate_classes

    try:
        classes = validate_classes(parse_classes(args.classes))
        background = parse_classes(args.background)
        prompts = dict(
            points=_json_arg(args.points, "points"),
            point_labels=_json_arg(args.point_labels, "point-labels"),
            boxes=_json_arg(args.boxes, "boxes"),
        )
        grid = {} if args.points_per_side is None else {"points_per_side": args.points_per_side}
        files = collect_images(args.inputs)
        segmenter = Segmenter(
            args.sam,
            args.clip,
            args.device,
            random_weights=args.random_weights,
            templates=args.templates,
            scorer=args.scorer,
            score_threshold=args.score_threshold,
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ovseg segment: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    stems: dict[str, int] = {}
    bar = tqdm(files, desc="segment", unit="img", disable=args.no_progress or len(files) < 2)
    for path in bar:
        stem = path.stem
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}_{stems[stem]}"
        try:
            result = segmenter.segment(path, classes, background=background, **prompts, **grid)
            result.save(out, stem)
        except (ValueError, TypeError, OSError) as e:
            failed.append(path)
            tqdm.write(f"ovseg segment: skipped {path}: {e}", file=sys.stderr)
    done = len(files) - len(failed)
    print(f"ovseg segment: wrote {done} of {len(files)} image(s) to {out}", file=sys.stderr)
    return 1 if failed else 0
