"""The outputs of one clip, written as the frames come, resumable.

Under ``OUT``:

- ``labels/NNNNNN.png``: per frame (``NNNNNN`` its index in the source), the label PNG of
  images (class ``i`` = value ``i``, 255 = unlabeled, the same palette);
- ``overlay.mp4``: the class colours on the frames, each object's box, id and class drawn;
- ``video.json``: the clip (input, fps, size, classes, settings); per object id its class,
  score, first and last frame; per frame each object's COCO RLE mask, box and class;
- ``.video_state.npz`` while a run is unfinished: the stream's state at the last checkpoint.

:class:`ClipWriter` checkpoints (state and JSON, each written atomically) every
``checkpoint_seconds`` and when closed, so an interrupted run leaves every finished frame and
a valid JSON; a rerun with the same settings loads the state and continues after the last
checkpointed frame, ending with the same outputs. Other settings into the same folder, or a
folder with files that no ``video.json`` explains, are refused.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageDraw, ImageFont
from pycocotools import mask as mask_utils

from ovseg import viz
from ovseg._io import atomic_write, atomic_write_text
from ovseg.result import SegmentationResult, read_label_png
from ovseg.video.io import VideoWriter

__all__ = ["ClipWriter", "render_overlay"]

JSON_NAME, STATE_NAME, OVERLAY_NAME, LABELS_DIR = (
    "video.json", ".video_state.npz", "overlay.mp4", "labels",
)  # fmt: skip


def render_overlay(
    frame: np.ndarray, label_map: np.ndarray, classes: list[str], objects: list[dict]
) -> np.ndarray:
    """The frame with class colours blended (no legend, so the size stays) and each object's
    box and ``#id class`` drawn in its class colour. ``objects``: dicts with ``id``,
    ``class_index`` and ``box`` (x0, y0, x1, y1). Returns RGB uint8 (H, W, 3)."""
    image = viz.overlay(frame, label_map, classes, legend=False)
    draw = ImageDraw.Draw(image)
    colours = viz.palette(len(classes))
    size = int(np.clip(frame.shape[0] / 30, 10, 18))
    try:
        font = ImageFont.load_default(size=size)
    except (OSError, ImportError):  # Pillow without FreeType
        font = ImageFont.load_default()
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        colour = tuple(int(c) for c in colours[obj["class_index"]])
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
        text = f"#{obj['id']} {classes[obj['class_index']]}"
        ty = y0 - size - 2 if y0 >= size + 2 else y0 + 2
        left, top, right, bottom = draw.textbbox((x0, ty), text, font=font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(0, 0, 0))
        draw.text((x0, ty), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def frame_record(index: int, result: SegmentationResult) -> dict[str, Any]:
    """One frame's JSON record: its label file and each tracked object's mask, box, class."""
    h, w = result.shape
    objects = []
    for seg in result.segments:
        if seg.track_id is None:
            continue
        rle = mask_utils.encode(np.asfortranarray(seg.mask, dtype=np.uint8))
        objects.append({
            "id": seg.track_id,
            "class": result.classes[seg.class_index],
            "class_index": seg.class_index,
            "score": round(seg.score, 6),
            "box": [int(v) for v in seg.box],
            "area": seg.area,
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
        })  # fmt: skip
    objects.sort(key=lambda o: o["id"])
    return {"frame": int(index), "labels": f"{LABELS_DIR}/{index:06d}.png", "objects": objects}


def stream_objects(stream) -> list[dict]:
    """Every object of a stream so far: id, class, score, first and last frame, frames seen."""
    return [
        {
            "id": t.id,
            "class": stream.classes[t.class_index],
            "class_index": t.class_index,
            "score": round(t.score, 6),
            "first_frame": t.first_frame,
            "last_frame": t.last_frame,
            "frames": t.frames,
        }  # fmt: skip
        for t in stream.all_tracks
    ]


class ClipWriter:
    """Writes one clip's outputs into ``out_dir``; see the module docstring.

    Args:
        out_dir: the output folder (created).
        classes: the class names.
        settings: everything that determines the outputs (input, models, options): a rerun
            resumes only when they are equal.
        info: the clip's description (fps, size...), stored in the JSON.
        overlay: write the overlay video.

    After construction, :attr:`state` is the saved stream state to resume from (or None) and
    :attr:`done` the frame indices already written.
    """

    def __init__(
        self, out_dir, classes: list[str], settings: dict, info: dict, *, overlay: bool = True,
        checkpoint_seconds: float = 10.0,
    ):  # fmt: skip
        self.out = Path(out_dir)
        self.classes, self.info, self.overlay = list(classes), dict(info), overlay
        self.settings = json.loads(json.dumps(settings))  # as it reads back from the JSON
        self.checkpoint_seconds = checkpoint_seconds
        self.records: list[dict] = []
        self.objects: list[dict] = []
        self.state: dict[str, np.ndarray] | None = None
        self.complete = False
        self._check_folder()
        self.done = {r["frame"] for r in self.records}
        self._video: VideoWriter | None = None
        self._last_checkpoint = time.monotonic()

    def _check_folder(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"output {self.out} exists and is not a folder")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / LABELS_DIR).mkdir(exist_ok=True)
        ours = {JSON_NAME, STATE_NAME, OVERLAY_NAME, LABELS_DIR}
        for leftover in self.out.iterdir():  # temporary files of a killed run
            if any(leftover.name.startswith(f".{name}.") for name in ours):
                leftover.unlink()
        meta = self.out / JSON_NAME
        if not meta.is_file():
            other = [p.name for p in self.out.iterdir() if p.name not in ours]
            if other or any((self.out / LABELS_DIR).iterdir()):
                raise ValueError(
                    f"{self.out} holds files no {JSON_NAME} explains ({sorted(other)[:3]}...); "
                    "choose an empty or new output folder"
                )
            return
        try:
            data = json.loads(meta.read_text("utf-8"))
            saved = data["ovseg"]["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta} is not a video.json of ovseg: {e}") from e
        if saved != self.settings:
            changed = sorted(k for k in {*saved, *self.settings}
                             if saved.get(k) != self.settings.get(k))  # fmt: skip
            raise ValueError(
                f"{self.out} holds the outputs of other settings (differing: {changed}); "
                "choose another output folder or delete it"
            )
        self.complete = bool(data["ovseg"].get("complete"))
        self.objects = data.get("objects", [])
        state_path = self.out / STATE_NAME
        if self.complete:
            self.records = data["frames"]
        elif state_path.is_file():
            with np.load(state_path) as npz:
                self.state = {k: npz[k] for k in npz.files}
            last = int(self.state["last_frame"])
            self.records = [r for r in data["frames"] if r["frame"] <= last]
        # else: interrupted before any checkpoint: start over

    def overlay_frame(self, frame: np.ndarray, label_map: np.ndarray, record: dict) -> None:
        if not self.overlay:
            return
        if self._video is None:
            self._video = VideoWriter(self.out / OVERLAY_NAME, self.info["fps"])
        self._video.write(render_overlay(frame, label_map, self.classes, record["objects"]))

    def replay(self, index: int, frame: np.ndarray) -> None:
        """A frame written before: its overlay again, from its label PNG and record."""
        record = next(r for r in self.records if r["frame"] == index)
        labels = read_label_png(self.out / record["labels"])
        self.overlay_frame(frame, labels, record)

    def add(self, index: int, result: SegmentationResult, objects: list[dict]) -> None:
        """Write a newly segmented frame: its label PNG, its record and its overlay frame.
        ``objects``: every object so far (id, class, score, first and last frame)."""
        record = frame_record(index, result)
        if not (self.out / JSON_NAME).exists():  # before the first label file: it explains them
            self._write_json(complete=False)
        result.save_png(self.out / record["labels"])
        self.records.append(record)
        self.done.add(index)
        self.objects = objects
        self.overlay_frame(result.image, result.label_map, record)

    def due(self) -> bool:
        return time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds

    def checkpoint(
        self, state: dict[str, np.ndarray] | None = None, last_frame: int | None = None
    ) -> None:
        """Save the stream's ``state`` after frame ``last_frame``, then the JSON (atomic)."""
        if state is not None:
            buf = io.BytesIO()
            np.savez(buf, last_frame=np.int64(last_frame), **state)
            atomic_write(self.out / STATE_NAME, lambda fh: fh.write(buf.getvalue()))
        self._write_json(complete=False)
        self._last_checkpoint = time.monotonic()

    def _write_json(self, complete: bool) -> None:
        seen = {o["id"] for r in self.records for o in r["objects"]}
        data = {
            "ovseg": {
                **self.info,
                "classes": self.classes,
                "settings": self.settings,
                "complete": complete,
                "frames_written": len(self.records),
            },
            "objects": [o for o in self.objects if o["id"] in seen],
            "frames": self.records,
        }
        atomic_write_text(self.out / JSON_NAME, json.dumps(data, indent=1))

    def run(self, source, stream, on_frame=None) -> int:
        """Segment every frame of ``source`` (a :class:`~ovseg.video.io.FrameSource`) not
        written yet with ``stream`` (a :class:`~ovseg.video.stream.VideoStream` whose state
        was loaded from :attr:`state`), replaying the others into the overlay, then close.
        ``on_frame(index)`` is called after each frame. Returns how many frames were
        segmented. On any exception (Ctrl-C included) the outputs so far are closed valid
        and resumable, and the exception propagates."""
        snapshot, segmented = None, 0
        try:
            for index, frame in source:
                if index in self.done:
                    self.replay(index, frame)
                else:
                    result = stream.step(frame, index)
                    self.add(index, result, stream_objects(stream))
                    state = stream.state_dict()
                    snapshot = None if state is None else (state, index)
                    segmented += 1
                    if self.due():
                        self.checkpoint(*(snapshot or ()))
                if on_frame is not None:
                    on_frame(index)
        except BaseException:
            self.close(complete=False, state=snapshot)
            raise
        self.close(complete=True)
        return segmented

    def close(self, complete: bool, state: tuple | None = None) -> None:
        """Finish: the overlay video closed (playable, with the frames so far) and the JSON;
        a complete run drops its state file, an interrupted one checkpoints ``state``
        (``(stream state, last frame)``)."""
        if self._video is not None:
            if self._video.frames:
                self._video.close()
            else:
                self._video.abort()
            self._video = None
        if complete:
            self._write_json(complete=True)
            (self.out / STATE_NAME).unlink(missing_ok=True)
            self.complete = True
        else:
            self.checkpoint(*(state or ()))
