"""Where ``ovseg segment`` writes, so that no output overwrites another, and how a run resumes.

Naming rule: an image's outputs keep its path relative to the input root, extension
included, under the output folder: ``ROOT/a/x.jpg`` gives ``OUT/a/x.jpg_labels.png``,
``OUT/a/x.jpg_overlay.png`` and ``OUT/a/x.jpg.json`` (COCO for that image alone). The input
root is the folder given (one folder), the folder of the file given (one file), or the
deepest folder holding every input given (several). Folders are searched recursively
(hidden folders and the output folder skipped). Two images never share a relative path, so
their outputs differ; the run's own files (``instances.json``, ``ovseg_run.json``, and with
``--format``: ``panoptic.json`` + ``panoptic/``, ``yolo/``) are checked against every planned
path too, and any clash (e.g. ``a/x.jpg`` and ``a/x.png`` with ``--format yolo``, which names
label files by stem) is refused before any work.

Existing outputs: ``ovseg_run.json`` records the settings of the run that wrote into OUT
(classes, models, prompts, options, input root) and its images. The same command again
resumes: images whose outputs are complete are skipped (said once), the rest are segmented,
and the run files are rebuilt for every recorded image. Other settings, or outputs that no
record explains, are refused before any work: nothing is overwritten silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
RECORD = "ovseg_run.json"
INSTANCES = "instances.json"
FORMATS = ("coco-panoptic", "yolo")
_PER_IMAGE = {"labels": "_labels.png", "overlay": "_overlay.png", "json": ".json"}


@dataclass(frozen=True)
class InputImage:
    """One image to segment: its file, its POSIX path relative to the input root, and why its
    outputs cannot be written (``refused``, see :func:`name_problem`; None for a usable name)."""

    path: Path
    name: str
    refused: str | None = None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name outputs inside the output folder, or None when it can.

    A usable name is a relative POSIX path whose parts are neither empty, ``.`` nor ``..``,
    without backslashes (a separator on Windows) or control characters: its outputs then lie
    under the output folder whatever the file system.
    """
    if not isinstance(name, str) or not name:
        return "an empty output name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"its output name {name!r} holds control characters"
    if "\\" in name:
        return f"its output name {name!r} holds a backslash"
    if name.startswith("/"):
        return f"its output name {name!r} is absolute, outside the output folder"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return (
            f"its output name {name!r} has '..', '.' or empty parts and could be written "
            "outside the output folder"
        )
    return None


def screened(images: Iterable[InputImage]) -> list[InputImage]:
    """``images`` with :attr:`InputImage.refused` set for each whose name is unusable."""
    from dataclasses import replace

    return [replace(i, refused=name_problem(i.name)) if name_problem(i.name) else i for i in images]


def collect_images(inputs: Sequence[str], out: Path) -> tuple[Path, list[InputImage]]:
    """The input root and the images of ``inputs`` (files as given, folders searched
    recursively for image suffixes), sorted by name, each once.

    Raises:
        FileNotFoundError: a folder without images.
    """
    out_abs = Path(os.path.abspath(out))
    found: dict[str, Path] = {}
    bases = []
    for item in inputs:
        path = Path(os.path.abspath(item))
        if path.is_dir():
            bases.append(path)
            images = _images_in(path, out_abs)
            if not images:
                raise FileNotFoundError(
                    f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {item}"
                )
            for image in images:
                found.setdefault(str(image), image)
        else:
            bases.append(path.parent)
            found.setdefault(str(path), path)  # a missing file is reported when it is read
    root = Path(os.path.commonpath([str(b) for b in bases])) if bases else Path.cwd()
    images = [InputImage(p, p.relative_to(root).as_posix()) for p in found.values()]
    return root, sorted(images, key=lambda i: i.name)


def _images_in(folder: Path, skip: Path) -> list[Path]:
    images = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(here, d) != skip)
        if Path(here) == skip:
            continue
        images += [Path(here, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return images


def per_image_paths(out: Path, name: str) -> dict[str, Path]:
    """``{"labels", "overlay", "json"}`` -> where the image ``name`` writes them."""
    base = out / name
    return {kind: base.parent / (base.name + suffix) for kind, suffix in _PER_IMAGE.items()}


def is_complete(out: Path, name: str) -> bool:
    """Whether every per-image output of ``name`` exists (the JSON is written last)."""
    return all(p.is_file() for p in per_image_paths(out, name).values())


def run_files(out: Path, formats: Iterable[str]) -> list[Path]:
    """The files of the run as a whole (not of one image)."""
    files = [out / RECORD, out / INSTANCES]
    if "coco-panoptic" in formats:
        files.append(out / "panoptic.json")
    if "yolo" in formats:
        files += [out / "yolo" / "data.yaml", out / "yolo" / "classes.txt"]
    return files


def export_paths(out: Path, name: str, formats: Iterable[str]) -> dict[str, Path]:
    """The per-image files of the ``--format`` exports (as the writers name them)."""
    paths = {}
    if "coco-panoptic" in formats:
        paths["coco-panoptic"] = out / "panoptic" / PurePosixPath(name).with_suffix(".png")
    if "yolo" in formats:
        paths["yolo"] = out / "yolo" / "labels" / PurePosixPath(name).with_suffix(".txt")
    return paths


def check_collisions(out: Path, names: Iterable[str], formats: Sequence[str]) -> None:
    """Raise ValueError if two outputs of the run would be the same file."""
    owners: dict[str, str] = {str(p): "the run itself" for p in run_files(out, formats)}
    for name in names:
        paths = {**per_image_paths(out, name), **export_paths(out, name, formats)}
        for kind, path in paths.items():
            other = owners.setdefault(str(path), name)
            if other != name:
                why = f" (--format {kind} names files by the image's stem)" * (kind in FORMATS)
                raise ValueError(
                    f"outputs of {name!r} and {other!r} would both be {path}{why}; rename one "
                    "of them or segment them into different output folders"
                )


def build_segmenter(settings: dict, device=None):
    """The :class:`~ovseg.pipeline.Segmenter` that a run of ``settings`` uses (models are
    loaded on first use). Raises what the Segmenter raises for bad model names."""
    from ovseg.cli._args import build_segmenter as build

    return build(settings, device)


def segment_image(segmenter, settings: dict, image):
    """Segment ``image`` (anything :func:`ovseg.image.load_image` takes) as ``settings`` say."""
    prompts = {k: settings[k] for k in ("points", "point_labels", "boxes")}
    return segmenter.segment(
        image, settings["classes"], background=settings["background"], **prompts
    )


def save_outputs(result, out: Path, name: str) -> None:
    """Write the per-image outputs of ``result`` under ``out`` as ``name``, each atomically; the
    COCO JSON last, as its presence marks the image complete."""
    problem = name_problem(name)
    if problem:
        raise ValueError(f"refused: {problem}")
    paths = per_image_paths(out, name)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    result.save_png(paths["labels"])
    result.save_overlay(paths["overlay"])
    result.save_json(paths["json"], file_name=name)


def write_record(out: Path, settings: dict, names: Sequence[str]) -> None:
    """Write ``OUT/ovseg_run.json`` (the run's settings and images) unless it already says
    exactly that."""
    from ovseg import __version__
    from ovseg._io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    record = {"ovseg": __version__, "settings": settings, "images": list(names)}
    text = json.dumps(record, indent=1) + "\n"
    path = out / RECORD
    if not (path.is_file() and path.read_text() == text):
        atomic_write_text(path, text)


def write_run_files(out: Path, settings: dict, names: Sequence[str], formats: Sequence[str]) -> str:
    """Write the run files (record, COCO instances, ``--format`` exports) for every image of
    ``names`` whose outputs are complete; returns what was written, in words."""
    from ovseg.exports import CocoInstancesWriter, CocoPanopticWriter, YoloWriter

    names = [n for n in names if name_problem(n) is None]
    done = [n for n in names if is_complete(out, n)]
    if not done:
        return "no run files (no image done)"
    write_record(out, settings, names)
    classes = settings["classes"]
    coco = CocoInstancesWriter(classes, out / INSTANCES)
    others = []
    if "coco-panoptic" in formats:
        others.append(CocoPanopticWriter(classes, out))
    if "yolo" in formats:
        others.append(YoloWriter(classes, out / "yolo"))
    for name in done:
        coco.add_record(coco_record_of(out, name))
        if others:
            result = load_saved(out, name, classes)
            for writer in others:
                writer.add(result, name)
    paths = [coco.close(), *(w.close() for w in others)]
    verb = "covers" if len(paths) == 1 else "cover"
    return f"{', '.join(str(p) for p in paths)} {verb} {len(done)} image(s)"


def read_record(out: Path) -> dict | None:
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); use another output folder") from e
    if not isinstance(record, dict) or not isinstance(record.get("images"), list):
        raise ValueError(f"{path} is not an ovseg run record; use another output folder")
    return record


def check_existing(
    out: Path, record: dict | None, settings: dict, names: Sequence[str], formats: Sequence[str]
) -> None:
    """Refuse to write into ``out`` when it holds outputs of other settings or unknown outputs.

    ``settings`` (JSON-normalised) must equal the record's; without a record, no output of the
    run may exist yet.
    """
    if record is not None:
        old = record.get("settings", {})
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            shown = "; ".join(f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in differ)
            raise ValueError(
                f"{out} holds the outputs of a run with other settings ({shown}); use another "
                f"output folder (-o), or the same settings to resume that run"
            )
        return
    for name in names:
        paths = {**per_image_paths(out, name), **export_paths(out, name, formats)}
        for path in paths.values():
            if path.exists():
                raise ValueError(
                    f"{path} exists and no {RECORD} says which run wrote it; use another output "
                    "folder (-o) so that nothing is overwritten"
                )
    for path in run_files(out, formats):
        if path.exists():
            raise ValueError(f"{path} exists; use another output folder (-o)")


def normalised(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as they read back from JSON (tuples become lists...)."""
    return json.loads(json.dumps(settings))


def load_saved(out: Path, name: str, classes: list[str]):
    """The :class:`~ovseg.result.SegmentationResult` of ``name`` rebuilt from its label PNG
    and COCO JSON (segments, scores, boxes and the label map; confidence is not stored and
    reads as 0), for the exports of images segmented by an earlier run."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from ovseg.result import Segment, SegmentationResult, read_label_png

    paths = per_image_paths(out, name)
    data = json.loads(paths["json"].read_text())
    labels = read_label_png(paths["labels"])
    segments = []
    for ann in data["annotations"]:
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"]}
        mask = mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool)
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        segments.append(
            Segment(
                ann["id"],
                mask,
                ann["category_id"] - 1,
                ann["score"],
                (x, y, x + w, y + h),
                ann["area"],
                0.0,
            )  # fmt: skip
        )
    return SegmentationResult(labels, np.zeros(labels.shape, np.float32), classes, segments)


def coco_record_of(out: Path, name: str) -> dict:
    """The per-image COCO record (:func:`ovseg.exports.coco_record`) of a saved image."""
    data = json.loads(per_image_paths(out, name)["json"].read_text())
    image = data["images"][0]
    keys = ("category_id", "segmentation", "area", "bbox", "score", "iscrowd")
    record = {
        "file_name": name,
        "width": image["width"],
        "height": image["height"],
        "annotations": [{k: a[k] for k in keys if k in a} for a in data["annotations"]],
    }
    if "classes" in data.get("ovseg", {}):
        record["classes"] = data["ovseg"]["classes"]
    return record
