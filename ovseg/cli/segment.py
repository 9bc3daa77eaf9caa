"""``ovseg segment IMAGE_OR_FOLDER... --classes ... -o OUT_DIR``.

Every check that does not depend on an image (classes, templates, prompts, grid flags,
device, output folder, existing outputs) runs once, before any model loads. Output names and
resuming: see :mod:`ovseg.cli._outputs`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ovseg.cli import _outputs, add_grid_arguments, add_model_arguments, check_device, model_choice
from ovseg.cli import grid_options as cli_grid_options
from ovseg.cli._outputs import FORMATS, IMAGE_SUFFIXES, collect_images

_BIG = 1 << 30  # an image size for checks of prompts that do not depend on the image

DESCRIPTION = """\
Segment images into an open vocabulary. Per image, under OUT, at the image's path relative
to the input root with its extension kept (a/x.jpg -> OUT/a/x.jpg_labels.png):
NAME_labels.png (class i = value i, 255 = unlabeled), NAME_overlay.png and NAME.json (COCO,
RLE masks). Per run: OUT/instances.json (COCO instances, file_name = the image's relative
path), OUT/ovseg_run.json (the run's settings), and the --format exports. The same command
again resumes an interrupted run; other settings into the same OUT are refused."""

EPILOG = """\
examples:
  ovseg segment photos/ --classes road car sky -o out/
  ovseg segment street.jpg --classes "road; street, red truck" --points "[[410, 220]]" -o out/
  ovseg segment photos/ --classes road car --method sam-clip --points-per-side 16 -o out/
  ovseg segment photos/ --classes road car --format yolo --format coco-panoptic -o out/
  ovseg segment 'photos/**/*.jpg' --classes road car -o out/ --ray --workers 4

--classes takes one or more names (quote names with spaces: "red truck"); commas and
newlines also split, ";" joins synonyms. End the class list with -- when images follow it."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images or folders into an open vocabulary",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.0,
        help="minimum class probability for a pixel or mask to be labelled (default 0)",
    )
    add_grid_arguments(p)
    p.add_argument(
        "--refine",
        choices=("masks",),
        default=None,
        help="masks: SAM's automatic masks refine the method's map, each taking the class of "
        "highest mean probability inside it (grid flags apply)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from ovseg.distributed.cli import add_ray_arguments

    add_ray_arguments(p, "images")
    p.set_defaults(func=run, intermixed="inputs")


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


def _error(message: object, code: int = 2) -> int:
    print(f"ovseg segment: error: {message}", file=sys.stderr)
    return code


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
    grid = cli_grid_options(args)
    models = model_choice(args)
    method = models["method"]
    from ovseg.methods.runner import needs_dino
    from ovseg.pipeline import METHODS

    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if needs_dino(method) and models["dino"] is None:
        raise ValueError(f"--method {method} needs --dino (dino_vitb8, dino_vitb16, NAME:PATH)")
    if grid and any(v is not None for v in prompts.values()):
        raise ValueError(
            f"grid options ({', '.join('--' + k.replace('_', '-') for k in grid)}) apply to "
            "automatic mode only, not with --points or --boxes"
        )
    if args.refine and method == "sam-clip":
        raise ValueError("--refine applies to the dense methods, not --method sam-clip")
    if grid and method != "sam-clip" and not args.refine:
        raise ValueError(
            f"grid options ({', '.join('--' + k.replace('_', '-') for k in grid)}) set SAM's "
            f"automatic masks, which method {method!r} does not use; add --method sam-clip "
            "or --refine masks"
        )
    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    check_device(args.device)
    return _outputs.normalised(
        {
            "classes": vocab.classes,
            "background": list(background),
            "templates": args.templates,
            "method": method,
            "refine": args.refine,
            "sam": models["sam"],
            "clip": models["clip"],
            "dino": models["dino"],
            "random_weights": args.random_weights,
            "scorer": args.scorer,
            "score_threshold": args.score_threshold,
            "grid": grid,
            **prompts,
        }
    )


def prepare(args: argparse.Namespace, collect=collect_images):
    """Every check of a run before any model loads: ``(out, formats, settings, images,
    known)``, ``known`` being the images an earlier run into ``out`` recorded besides these.
    ``collect(inputs, out) -> (root, images)`` lists the inputs.

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
    settings["root"] = str(root)
    record = _outputs.read_record(out)
    names = [i.name for i in images]
    current = set(names)
    known = [] if record is None else [n for n in record["images"] if n not in current]
    _outputs.check_collisions(out, [*known, *names], formats)
    _outputs.check_existing(out, record, settings, names, formats)
    return out, formats, settings, images, known


def run(args: argparse.Namespace) -> int:
    from ovseg.distributed.cli import ray_options, run_segment

    if args.ray:
        return run_segment(args, prepare, _error)
    try:
        ray_options(args)  # refuses --workers and friends without --ray
        plan = prepare(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _error(e)
    return _Run(args, *plan).run()


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


class _Run:
    """One ``ovseg segment`` run after the checks: segment, save, then write the run files."""

    def __init__(self, args, out: Path, formats: list[str], settings: dict, images, known):
        self.args, self.out, self.formats, self.settings = args, out, formats, settings
        self.images, self.names = images, [*known, *(i.name for i in images)]
        self.classes = settings["classes"]
        self.segmenter = None
        self.written, self.skipped, self.failed = 0, 0, []
        self.recorded = False

    def run(self) -> int:
        from tqdm import tqdm

        todo = [i for i in self.images if not _outputs.is_complete(self.out, i.name)]
        self.skipped = len(self.images) - len(todo)
        if self.skipped:
            print(
                f"ovseg segment: resuming: {self.skipped} of {len(self.images)} image(s) already "
                f"have their outputs in {self.out}; skipped",
                file=sys.stderr,
            )
        bar = tqdm(todo, desc="segment", unit="img", disable=self.args.no_progress or len(todo) < 2)
        try:
            for image in bar:
                self._one(image, bar)
        except _LoadError as e:
            return _error(e.__cause__ or e)
        except KeyboardInterrupt:
            bar.close()
            try:
                run_files = self._finish()
            except KeyboardInterrupt:
                run_files = "the run files were not written"
            print(
                f"ovseg segment: interrupted: {self._summary()}; {run_files}. Run the same "
                "command again to resume.",
                file=sys.stderr,
            )
            return 130
        try:
            run_files = self._finish()
        except (ValueError, OSError) as e:
            return _error(f"writing the run files: {e}", 1)
        print(f"ovseg segment: {self._summary()}; {run_files}", file=sys.stderr)
        return 1 if self.failed else 0

    def _summary(self) -> str:
        text = f"wrote {self.written} of {len(self.images)} image(s) to {self.out}"
        if self.skipped:
            text += f" ({self.skipped} already there)"
        if self.failed:
            text += f", {len(self.failed)} failed (listed above)"
        return text

    def _build(self):
        try:
            return _outputs.build_segmenter(self.settings, self.args.device)
        except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as e:
            raise _LoadError() from e

    def _one(self, image, bar) -> None:
        from tqdm import tqdm

        self.segmenter = self.segmenter or self._build()
        try:
            result = _outputs.segment_image(self.segmenter, self.settings, image.path)
            self._record()
            _outputs.save_outputs(result, self.out, image.name)
            self.written += 1
        except (ValueError, TypeError, OSError) as e:
            self.failed.append(image.path)
            tqdm.write(f"ovseg segment: skipped {image.path}: {e}", file=sys.stderr)

    def _record(self) -> None:
        """Write ``ovseg_run.json`` before the first output (so a failed model load leaves
        nothing that a corrected command would have to match)."""
        if not self.recorded:
            _outputs.write_record(self.out, self.settings, self.names)
            self.recorded = True

    def _finish(self) -> str:
        """Write the run files for every recorded image whose outputs are complete."""
        return _outputs.write_run_files(self.out, self.settings, self.names, self.formats)


class _LoadError(Exception):
    """The models could not be built (the cause says why)."""
