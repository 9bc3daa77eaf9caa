"""``ovseg segment --ray`` and :func:`segment_dataset`: segment a dataset with Ray Data.

The images become a Ray dataset of ``(uri, name)`` rows; ``map_batches`` sends them to a
pool of workers (Ray actors), each holding one :class:`SegmentWorker`: the models are built
once per worker, then every image is read, segmented and written by the worker, with the same
functions as a local ``ovseg segment`` run (:mod:`ovseg.cli._outputs`), so the outputs are the
same files, byte for byte, for the same models and device. Execution streams: the driver only
receives one small manifest row per image.

Faults: an image that cannot be read or segmented is a ``failed`` row of the manifest, not an
error of the run; a worker that dies is restarted by Ray and its batch retried (Ray Data's
actors restart without limit); every output is written to a temporary name and renamed, and
the COCO JSON last marks an image complete, so a crash leaves no half-written file. The
same command again resumes: images whose outputs are complete are not sent to the workers.

The manifest ``OUT/ovseg_manifest.jsonl`` has one JSON object per image: ``image`` (its
relative name), ``uri``, ``status`` (``ok``, ``failed``, or ``done`` for outputs found from a
run that was not a Ray run, e.g. a local ``ovseg segment``), ``classes`` (the class names its
label map holds), ``error``, ``seconds`` (``read``, ``segment``, ``write``), ``worker``
(host:pid; for an image refused before any work, the driver's; ``"local run"`` on ``done``
rows) and ``finished`` (when, in seconds since the epoch).

Each worker also appends its rows to ``OUT/.ovseg_journal/HOST-PID.jsonl`` as it writes the
outputs, so rows that never reached the driver (Ctrl-C, a driver that died) are still known:
the manifest and the summary count what is on disk. The journal is folded into the manifest
and removed at the end of the run.

An image whose output name would leave ``OUT`` (``..``, an absolute path: see
:func:`ovseg.cli._outputs.name_problem`) is a ``failed`` row, refused before any work.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from ovseg.cli import _outputs
from ovseg.distributed.inputs import read_image

__all__ = ["FAULT_ENV", "MANIFEST", "SegmentWorker", "run_ray", "segment_dataset"]

MANIFEST = "ovseg_manifest.jsonl"
JOURNAL = ".ovseg_journal"
LOCAL_WORKER = "local run"
# Test hook: a path; the first worker call that creates this file exits its process at once.
FAULT_ENV = "OVSEG_RAY_FAULT_ONCE"
_COLUMNS = ("image", "uri", "status", "classes", "error", "seconds", "worker", "finished")


class SegmentWorker:
    """The per-worker model of a distributed run: built once when Ray starts the worker,
    then called on batches of ``{"uri", "name"}`` rows; returns their manifest rows (nested
    values as JSON text)."""

    def __init__(
        self, settings: dict, out: str, device=None, threads: int = 1,
        fault_once: str | None = None,
    ):  # fmt: skip
        from ovseg.distributed._ray import set_threads

        set_threads(threads)
        self.settings, self.out, self.fault_once = settings, Path(out), fault_once
        self.segmenter = _outputs.build_segmenter(settings, device)
        self.worker = _host_pid()
        self.journal = self.out / JOURNAL / f"{self.worker.replace(':', '-')}.jsonl"

    def __call__(self, batch: dict) -> dict:
        if self.fault_once:
            exit_once(self.fault_once)
        rows = [self.one(str(u), str(n)) for u, n in zip(batch["uri"], batch["name"], strict=True)]
        return {k: [r[k] for r in rows] for k in _COLUMNS}

    def one(self, uri: str, name: str) -> dict:
        """Read, segment and write one image; its manifest row."""
        seconds, error, found = {}, None, []
        start = time.perf_counter()
        try:
            image = read_image(uri)
            seconds["read"] = time.perf_counter() - start
            result = _outputs.segment_image(self.segmenter, self.settings, image)
            seconds["segment"] = time.perf_counter() - start - seconds["read"]
            _outputs.save_outputs(result, self.out, name)
            seconds["write"] = time.perf_counter() - start - seconds["read"] - seconds["segment"]
            found = _classes_found(result.label_map, result.classes)
        except (ValueError, TypeError, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        row = {
            "image": name,
            "uri": uri,
            "status": "failed" if error else "ok",
            "classes": found,
            "error": error,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "worker": self.worker,
            "finished": round(time.time(), 3),
        }
        self._journal(row)
        return _flat(row)

    def _journal(self, row: dict) -> None:
        """Append ``row`` to this worker's journal (see the module docstring)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _host_pid() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _flat(row: dict) -> dict:
    """A manifest row as Ray carries it: nested values as JSON text, no None."""
    flat = dict(row)
    flat["classes"], flat["seconds"] = json.dumps(row["classes"]), json.dumps(row["seconds"])
    flat["error"] = row["error"] or ""
    return flat


def exit_once(marker: str) -> None:
    """The fault test hook: exit this process at once if it is the first to create ``marker``."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os._exit(1)  # the worker dies mid-batch, as a crashed or killed process does


def _classes_found(label_map: np.ndarray, classes) -> list[str]:
    return [classes[i] for i in np.unique(label_map) if i >= 0]


def _row(raw: dict) -> dict:
    row = {k: raw[k] for k in _COLUMNS}
    row["classes"] = json.loads(row["classes"])
    row["seconds"] = json.loads(row["seconds"])
    row["error"] = row["error"] or None
    return row


def read_manifest(out: Path) -> dict[str, dict]:
    """The rows of ``OUT/ovseg_manifest.jsonl`` by image name (empty if there is none)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["image"]] = row
    return rows


def read_journal(out: Path) -> dict[str, dict]:
    """The rows the workers journaled under ``OUT/.ovseg_journal`` by image name (the latest
    of each; a line cut short by a killed worker is skipped)."""
    rows: dict[str, dict] = {}
    for path in sorted((Path(out) / JOURNAL).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or set(row) != set(_COLUMNS):
                continue
            before = rows.get(row["image"])
            if before is None or (row["finished"] or 0) >= (before["finished"] or 0):
                rows[row["image"]] = row
    return rows


def _done_row(out: Path, image, classes: list[str]) -> dict:
    """The row of outputs that no Ray worker journaled: written by a local run."""
    from ovseg.result import read_label_png

    labels = read_label_png(_outputs.per_image_paths(out, image.name)["labels"])
    found = _classes_found(labels, classes)
    row = {"image": image.name, "uri": str(image.path), "status": "done", "classes": found}
    return row | {"error": None, "seconds": {}, "worker": LOCAL_WORKER, "finished": None}


def _refused_row(image, driver: str) -> dict:
    return {
        "image": image.name, "uri": str(image.path), "status": "failed", "classes": [],
        "error": f"ValueError: refused: {image.refused}", "seconds": {}, "worker": driver,
        "finished": round(time.time(), 3),
    }  # fmt: skip


def _write_manifest(out: Path, rows: list[dict]) -> bool:
    """Write the manifest unless it already holds exactly ``rows``; whether it was written."""
    from ovseg._io import atomic_write_text

    text = "".join(json.dumps(r) + "\n" for r in rows)
    path = out / MANIFEST
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def _forget_record(out: Path, recorded: bool, todo) -> None:
    """Remove the record this run wrote if no image got its outputs (as a local run, which
    records only before its first output): a corrected command then has nothing to match."""
    if not recorded and not any(_outputs.is_complete(out, i.name) for i in todo):
        (out / _outputs.RECORD).unlink(missing_ok=True)


def run_ray(
    out: Path, formats, settings: dict, images, known, ray_options, *, device=None,
    progress: bool = False,
) -> dict:  # fmt: skip
    """Segment ``images`` (already checked by :func:`ovseg.cli._plan.prepare`) on Ray and
    write the outputs, the manifest and the run files; the summary (see
    :func:`segment_dataset`; ``"interrupted": True`` after Ctrl-C). A failure of Ray itself
    (no cluster, workers that cannot build the models) raises ``RuntimeError`` naming it."""
    start = time.perf_counter()
    usable = [i for i in images if i.refused is None]
    names = [*known, *(i.name for i in usable)]
    todo = [i for i in usable if not _outputs.is_complete(out, i.name)]
    summary = {"images": len(images), "written": 0, "skipped": len(usable) - len(todo)}
    recorded = (out / _outputs.RECORD).is_file()
    driver = _host_pid()
    rows = {i.name: _refused_row(i, driver) for i in images if i.refused}
    if todo:
        _outputs.write_record(out, settings, names)  # before any worker writes an output
        try:
            rows |= _stream(out, settings, todo, ray_options, device, progress, summary)
        finally:
            _forget_record(out, recorded, todo)
    journal = read_journal(out)
    for image in todo:  # rows that never reached the driver (Ctrl-C), as the worker wrote them
        if image.name not in rows and image.name in journal:
            rows[image.name] = journal[image.name]
    merged = _merge_rows(out, images, rows, read_manifest(out), settings["classes"], journal)
    failed = [r for r in merged if r["status"] == "failed"]
    summary["written"] = sum(_outputs.is_complete(out, i.name) for i in todo)  # what is on disk
    summary["failed"] = [{"image": r["image"], "error": r["error"]} for r in failed]
    rewrite = summary["written"] or not all(p.is_file() for p in _outputs.run_files(out, formats))
    summary["run_files"] = (
        _outputs.write_run_files(out, settings, names, formats) if rewrite else "run files kept"
    )
    if merged:
        _write_manifest(out, merged)
    if (out / JOURNAL).exists():
        import shutil

        shutil.rmtree(out / JOURNAL, ignore_errors=True)  # folded into the manifest
    summary["manifest"] = str(out / MANIFEST) if merged else "no manifest (no image done)"
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _stream(out: Path, settings, todo, ray_options, device, progress, summary) -> dict:
    """Run the workers over ``todo``; their manifest rows by image name, as they arrive."""
    from tqdm import tqdm

    from ovseg.distributed._ray import connect, worker_error

    rows = {}
    items = [{"uri": str(i.path), "name": i.name} for i in todo]
    kwargs = {
        "settings": settings, "out": str(out.resolve()), "device": device,
        "threads": ray_options.threads(), "fault_once": os.environ.get(FAULT_ENV) or None,
    }  # fmt: skip
    try:
        with (
            connect(ray_options.address) as ray,
            ray_options.worker_pool(ray, len(items)) as pool,
        ):
            blocks = -(-len(items) // ray_options.batch_size)  # one block per batch: one task
            data = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
                SegmentWorker, fn_constructor_kwargs=kwargs, **pool
            )
            bar = tqdm(total=len(items), desc="segment", unit="img", disable=not progress)
            try:
                for raw in data.iter_rows():
                    rows[raw["image"]] = _row(raw)
                    bar.update(1)
            except KeyboardInterrupt:
                summary["interrupted"] = True
            bar.close()
    except Exception as e:
        if type(e).__module__.startswith("ray"):
            raise RuntimeError(f"the Ray run failed: {worker_error(e)}") from e
        raise
    return rows


def _merge_rows(out: Path, images, rows: dict, old: dict, classes, journal: dict) -> list[dict]:
    """The manifest: this run's rows, the earlier manifest's for the other images (and for an
    image that failed again with the same error), a journaled row or a ``done`` row for
    outputs without one."""
    merged = []
    for image in images:
        row, before = rows.get(image.name), old.get(image.name)
        if row is None and not _outputs.is_complete(out, image.name):
            merged += [before] if before else []  # interrupted before this image
        elif row is None and before is None and image.name in journal:
            merged.append(journal[image.name])  # written by a run whose driver died
        elif row is None:
            merged.append(before if before is not None else _done_row(out, image, classes))
        elif before and before["status"] == row["status"] == "failed":
            merged.append(before if before["error"] == row["error"] else row)
        else:
            merged.append(row)
    return merged


def segment_dataset(
    inputs, classes, out, *, address: str | None = None, workers: int | None = None,
    gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, batch_size: int = 1,
    threads_per_worker: int | None = None, formats=(), progress: bool = False, **options,
) -> dict:  # fmt: skip
    """Segment every image of ``inputs`` into ``classes`` on a Ray cluster, writing what
    ``ovseg segment`` writes under ``out`` plus the manifest ``out/ovseg_manifest.jsonl``.

    Args:
        inputs: a folder, a glob, a text file of paths or URIs, a URI pyarrow reads
            (``s3://``, ``gs://``, ``file://``), or a list of them (see
            :mod:`ovseg.distributed.inputs`).
        classes: class names (``"a; b"`` makes synonyms).
        out: output folder; on a cluster of several machines it must be a folder every worker
            can write (a shared file system).
        address: None starts a local Ray here, ``"auto"`` joins this machine's cluster,
            ``"ray://HOST:10001"`` a remote one (this and the five below: see
            :class:`~ovseg.distributed._ray.RayOptions`).
        workers: model copies (Ray actors); None: as many as the cluster's CPUs (or GPUs)
            allow.
        gpus_per_worker: GPUs each worker reserves (a fraction shares a GPU).
        cpus_per_worker: CPUs each worker reserves.
        batch_size: images per call of a worker.
        threads_per_worker: torch CPU threads per worker; None: as many as a local run uses.
        formats: extra exports, ``"coco-panoptic"``, ``"yolo"``.
        **options: the options of ``ovseg segment`` by their Python names: ``sam``, ``clip``,
            ``method``, ``dino``, ``device``, ``random_weights``, ``scorer``, ``templates``,
            ``score_threshold``, ``background`` (a list), ``refine``, ``points``,
            ``point_labels``, ``boxes`` (lists), and the grid options (``points_per_side``...).

    Returns:
        ``{"images", "written", "skipped", "failed": [{"image", "error"}], "run_files",
        "manifest", "seconds"}``.

    Raises:
        ValueError, TypeError, FileNotFoundError: bad options or inputs, before any work.
        RuntimeError: Ray failed (no cluster at ``address``, models that do not build).
    """
    from ovseg.cli._plan import prepare
    from ovseg.cli._ray_args import check_worker_device
    from ovseg.distributed._ray import RayOptions
    from ovseg.distributed.inputs import list_inputs
    from ovseg.distributed.plan import namespace, prepare_on_driver

    ray_options = RayOptions(
        address, workers, cpus_per_worker, gpus_per_worker, batch_size, threads_per_worker
    )
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    args = namespace(inputs, classes, out, formats, options)
    check_worker_device(args.device, gpus_per_worker)
    out, formats, settings, images, known = prepare_on_driver(args, prepare, list_inputs)
    return run_ray(
        out, formats, settings, images, known, ray_options, device=args.device, progress=progress
    )


def print_summary(summary: dict, out: Path) -> None:
    """The one-line account of a run on stderr, with the failed images first."""
    for failed in summary["failed"]:
        print(f"ovseg segment: skipped {failed['image']}: {failed['error']}", file=sys.stderr)
    text = f"wrote {summary['written']} of {summary['images']} image(s) to {out}"
    if summary["skipped"]:
        text += f" ({summary['skipped']} already there)"
    if summary["failed"]:
        text += f", {len(summary['failed'])} failed (listed above and in the manifest)"
    manifest = summary["manifest"]
    manifest = manifest if manifest.startswith("no ") else f"manifest {manifest}"
    print(
        f"ovseg segment: {text} in {summary['seconds']:.1f} s; {summary['run_files']}; {manifest}",
        file=sys.stderr,
    )
