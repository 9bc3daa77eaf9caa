"""``ovseg segment IMAGE_OR_FOLDER... --classes ... -o OUT_DIR``.

Every check that does not depend on an image runs once, before any model loads
(:mod:`ovseg.cli._plan`). Output names and resuming: see :mod:`ovseg.cli._outputs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovseg.cli import _outputs
from ovseg.cli._plan import add_arguments, prepare

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
    add_arguments(p)
    p.set_defaults(func=run, intermixed="inputs")


def _error(message: object, code: int = 2) -> int:
    print(f"ovseg segment: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from ovseg.cli._ray_args import ray_options
    from ovseg.distributed.cli import run_segment

    if args.ray:
        return run_segment(args, prepare, _error)
    try:
        ray_options(args)  # refuses --workers and friends without --ray
        plan = prepare(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _error(e)
    return _Run(args, *plan).run()


class _Run:
    """One ``ovseg segment`` run after the checks: segment, save, then write the run files."""

    def __init__(self, args, out: Path, formats: list[str], settings: dict, images, known):
        self.args, self.out, self.formats, self.settings = args, out, formats, settings
        self.images = images
        self.names = [*known, *(i.name for i in images if i.refused is None)]
        self.classes = settings["classes"]
        self.segmenter = None
        self.written, self.skipped, self.failed = 0, 0, []
        self.recorded = False

    def run(self) -> int:
        from tqdm import tqdm

        todo = [i for i in self.images if i.refused or not _outputs.is_complete(self.out, i.name)]
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

        if image.refused:
            self.failed.append(image.path)
            message = f"ovseg segment: skipped {image.path}: refused: {image.refused}"
            tqdm.write(message, file=sys.stderr)
            return
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
