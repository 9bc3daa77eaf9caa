"""Everything ``ovseg segment`` checks before any model loads, and its options (shared by
``ovseg segment --ray`` and :func:`ovseg.distributed.segment_dataset`): classes, templates,
prompts, the method and its options, grid flags, device, the output folder and what it
already holds. Output names and resuming: see :mod:`ovseg.cli._outputs`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ovseg.cli import _outputs
from ovseg.cli._args import (
    add_grid_arguments,
    add_method_arguments,
    add_model_arguments,
    grid_options,
    method_settings,
)
from ovseg.cli._outputs import FORMATS, IMAGE_SUFFIXES, collect_images
from ovseg.cli._ray_args import add_ray_arguments

__all__ = ["add_arguments", "prepare"]

_BIG = 1 << 30  # an image size for checks of prompts that do not depend on the image


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ovseg segment``."""
    p.add_argument(
        "inputs", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files and/or folders"
    )
    p.add_argument(
        "--classes",
        nargs="+",
        action="extend",
        required=True,
        metavar="NAME",
        help='class names, e.g. --classes road car sky, or "road; street, red truck, sky" '
        '(commas split, ";" joins synonyms); may be repeated',
    )
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        default=[],
        type=_formats,
        metavar="FMT",
        help=f"extra exports, repeatable or comma-separated: {', '.join(FORMATS)} "
        "(COCO instances are always written)",
    )
    p.add_argument("--points", help='JSON list of [x, y] pixels, e.g. "[[120, 80]]"')
    p.add_argument("--point-labels", help="JSON list of 1 (positive) / 0 (negative)")
    p.add_argument("--boxes", help="JSON list of [x0, y0, x1, y1] pixels")
    p.add_argument(
        "--background", nargs="+", action="extend", default=[], metavar="NAME",
        help="background names (comma-separated or several)",
    )  # fmt: skip
    add_model_arguments(p)
    add_method_arguments(p)
    add_grid_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_ray_arguments(p, "images")


def _formats(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(bad) or repr(text)}; choose from {', '.join(FORMATS)}"
        )
    return names


def _json_arg(text: str | None, name: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{name} must be JSON, e.g. [[10, 20]]: {e}") from e


def _settings(args: argparse.Namespace) -> dict:
    """Everything besides the images that decides what the run writes (checked on resume)."""
    from ovseg.proposals.prompts import make_prompt
    from ovseg.result import check_png_classes
    from ovseg.scoring.vocabulary import Vocabulary, parse_classes

    classes = [c for token in args.classes for c in parse_classes(token)]
    background = [c for token in args.background for c in parse_classes(token)]
    # the library's own checks: names, synonyms, duplicates, background, templates
    vocab = Vocabulary(classes, args.templates, background)
    check_png_classes(len(vocab.classes))  # every run writes label PNGs
    prompts = {
        "points": _json_arg(args.points, "points"),
        "point_labels": _json_arg(args.point_labels, "point-labels"),
        "boxes": _json_arg(args.boxes, "boxes"),
    }
    make_prompt((_BIG, _BIG), **prompts)  # all but the in-image checks, which need the image
    if any(v is not None for v in prompts.values()) and grid_options(args):
        flags = ", ".join("--" + k.replace("_", "-") for k in grid_options(args))
        raise ValueError(
            f"grid options ({flags}) apply to automatic mode only, not with --points or --boxes"
        )
    method = method_settings(args)
    return _outputs.normalised(
        {
            "classes": vocab.classes,
            "background": list(background),
            **method,
            **prompts,
        }
    )


def prepare(args: argparse.Namespace, collect=collect_images):
    """Every check of a run before any model loads: ``(out, formats, settings, images,
    known)``, ``known`` being the images an earlier run into ``out`` recorded besides these.
    ``collect(inputs, out) -> (root, images)`` lists the inputs. An image whose output name
    would leave ``out`` comes back with ``refused`` set (see :func:`_outputs.name_problem`):
    the run reports it as failed and goes on with the others.

    Raises:
        ValueError, TypeError, FileNotFoundError: what is wrong, in words.
    """
    out = Path(args.out)
    formats = sorted({f for group in args.formats for f in group})
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out} is a file; give a folder for the outputs")
    settings = _settings(args)
    if not args.inputs:
        raise ValueError(_no_inputs_message(args.classes))
    root, images = collect(args.inputs, out)
    images = _outputs.screened(images)  # a name that would leave OUT fails alone, later
    settings["root"] = str(root)
    record = _outputs.read_record(out)
    names = [i.name for i in images if i.refused is None]
    current = set(names)
    recorded = [] if record is None else record["images"]
    known = [n for n in recorded if n not in current and _outputs.name_problem(n) is None]
    _outputs.check_collisions(out, [*known, *names], formats)
    _outputs.check_existing(out, record, settings, names, formats)
    return out, formats, settings, images, known


def _no_inputs_message(class_tokens: list[str]) -> str:
    eaten = [
        t for t in class_tokens if Path(t).suffix.lower() in IMAGE_SUFFIXES or Path(t).exists()
    ]
    if eaten:
        return (
            f"no image given: {eaten[0]!r} was read as a class name; put the images before "
            "--classes, or end the class list with --"
        )
    return "no image given: name image files and/or folders"
