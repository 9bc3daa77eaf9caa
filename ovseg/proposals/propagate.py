"""Masks through a video: :func:`propagate` prompts on some frames to masks on every frame,
with SAM 2's memory (transformers' ``Sam2VideoModel``), equal to Meta's ``SAM2VideoPredictor``.

Frames are read on demand and the tracking state is trimmed as propagation moves on, so memory
does not grow with the clip's length (see :mod:`ovseg.proposals.tracker`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch

from ovseg.proposals.frames import ClipFrames, open_frames
from ovseg.proposals.tracker import FrameMasks, VideoTracker, check_object_prompts

__all__ = ["FrameMasks", "propagate"]

_DIRECTIONS = ("forward", "reverse", "both")


def propagate(
    model,
    frames,
    prompts: Mapping[int, Mapping[int, object]],
    *,
    start_frame: int | None = None,
    max_frames: int | None = None,
    direction: str = "forward",
    offload_state_to_cpu: bool = False,
) -> Iterator[FrameMasks]:
    """Yield each frame's masks of the prompted objects, frame after frame.

    Args:
        model: a ``transformers.Sam2VideoModel`` (its device and dtype are used).
        frames: a folder of images, a sequence of frames (anything
            :func:`ovseg.image.load_image` reads, or a ``(T, H, W, 3)`` array), or any other
            iterable of frames, read as a stream (see below).
        prompts: ``{frame_index: {obj_id: prompt}}``; a prompt is a mask (bool ``(H, W)``,
            taken as the object's exact mask on that frame), a dict with ``points`` (``(x, y)``
            pixels), ``point_labels`` (1 positive, 0 negative), ``box`` (``(x0, y0, x1, y1)``
            pixels), ``scribble`` or ``mask`` (alone), or a
            :class:`~ovseg.proposals.prompts.Prompt`. An object may be prompted on several
            frames, and objects on different frames.
        start_frame: the first frame to yield; default the earliest prompted frame.
        max_frames: yield at most this many frames per direction (default: to the clip's end).
        direction: ``"forward"``; ``"reverse"`` (from ``start_frame`` back to frame 0); or
            ``"both"``: forward, then back from ``start_frame - 1``, each frame yielded once
            (Meta's forward pass, then its reverse pass from the same start frame).
        offload_state_to_cpu: keep the tracking state on the CPU when the model is on a GPU.

    Yields:
        :class:`~ovseg.proposals.tracker.FrameMasks` in processing order. With a folder or a
        sequence every object is on every yielded frame, as in
        ``SAM2VideoPredictor.propagate_in_video`` (an object first prompted on a later frame is
        tracked on the frames before from that prompt's memory).

    A stream (a generator, a decoder) is read once, forward only, one frame held at a time:
    objects join on the frame where they are first prompted, frames before the first prompt
    yield no objects, and a prompt on a frame the stream never reaches is a ValueError at its
    end. For prompts on its first frame only, a stream yields what the same frames as a
    sequence yield once the clip has at least ``max_object_pointers_in_encoder`` frames.
    Use :class:`~ovseg.proposals.tracker.VideoTracker` to prompt from the results as they come.

    Raises:
        ValueError: a prompt on a frame outside the clip, a bad object id, an empty or
            mis-sized mask, bad points or boxes, a mask with points, a bad direction, start
            frame or count, frames of different sizes.
        TypeError: prompts that are not a mapping, a model that is not a ``Sam2VideoModel``.
        FileNotFoundError: a frame folder that does not exist.
    """
    from transformers import Sam2VideoModel

    if not isinstance(model, Sam2VideoModel):
        raise TypeError(f"model must be a transformers Sam2VideoModel, got {type(model).__name__}")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
    if start_frame is not None and (
        isinstance(start_frame, bool) or not isinstance(start_frame, int) or start_frame < 0
    ):
        raise ValueError(f"start_frame must be a frame index >= 0, got {start_frame!r}")
    prompts = _frame_keys(prompts)
    source = open_frames(frames)
    if isinstance(source, ClipFrames):
        n = len(source)
        outside = sorted(f for f in prompts if f >= n)
        if outside:
            raise ValueError(f"prompts on frames {outside}: the clip has {n} frames (0..{n - 1})")
        if start_frame is not None and start_frame >= n:
            raise ValueError(f"start_frame {start_frame}: the clip has {n} frames (0..{n - 1})")
        checked = {f: check_object_prompts(objs, source.size, f) for f, objs in prompts.items()}
        start = min(checked) if start_frame is None else start_frame
        count = n if max_frames is None else max_frames
        return _run_clip(model, source, checked, start, count, direction, offload_state_to_cpu)
    if direction != "forward":
        raise ValueError(f"direction={direction!r} needs a folder or a sequence, not a stream")
    start = 0 if start_frame is None else start_frame
    early = sorted(f for f in prompts if f < start)
    if early:
        raise ValueError(f"prompts on frames {early}, before the stream's start frame {start}")
    tracker = VideoTracker(model, offload_state_to_cpu=offload_state_to_cpu)
    return _run_stream(tracker, source, prompts, start, max_frames)


def _frame_keys(prompts) -> dict[int, Mapping]:
    if not isinstance(prompts, Mapping):
        raise TypeError(
            "prompts must be a mapping {frame_index: {obj_id: prompt}}, "
            f"got {type(prompts).__name__}"
        )
    if not prompts:
        raise ValueError("no prompts: give at least one object on one frame")
    out = {}
    for f, objs in prompts.items():
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
            raise ValueError(f"prompt frame indices must be integers >= 0, got {f!r}")
        out[int(f)] = objs
    return out


class _LazyPixels:
    """The session's frame store for a clip: a frame is read and preprocessed when asked for."""

    def __init__(self, clip: ClipFrames, tracker_pixels):
        self.clip, self.to_pixels = clip, tracker_pixels

    def __len__(self) -> int:
        return len(self.clip)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.to_pixels(self.clip[index])


def _run_clip(model, clip, prompts, start, count, direction, offload):
    frames = _LazyPixels(clip, None)
    tracker = VideoTracker(model, offload_state_to_cpu=offload, _frames=frames, _size=clip.size)
    frames.to_pixels = tracker.pixels
    for f in sorted(prompts):
        tracker._add_inputs(f, prompts[f])
        tracker._forward(f)
    tracker._forget_tracking()
    passes = []
    if direction in ("forward", "both"):
        passes.append((range(start, min(start + count, len(clip))), 1))
    if direction in ("reverse", "both"):
        passes.append((range(start, max(start - count, -1), -1), -1))
    # The reverse pass of "both" reads the forward pass's outputs after the start frame.
    keep = range(start, start + tracker.window + 1) if direction == "both" else None
    for order, sign in passes:
        for f in order:
            result = tracker._forward(f, reverse=sign < 0)
            tracker._trim(f, sign, keep if sign > 0 else None)
            if not (direction == "both" and sign < 0 and f == start):
                yield result


def _run_stream(tracker: VideoTracker, stream, prompts, start, max_frames):
    pending = dict(prompts)
    yielded, f = 0, -1
    for f, frame in enumerate(stream):
        if max_frames is not None and yielded >= max_frames:
            return
        result = tracker.step(frame)
        if f == 0:  # the frame size is known: check every prompt before any model work
            pending = {t: check_object_prompts(o, tracker.size, t) for t, o in pending.items()}
        if f < start:
            continue
        if f in pending:
            result = tracker.add(pending.pop(f))
        yielded += 1
        yield result
    if f < 0:
        raise ValueError("the stream gave no frames")
    if pending:
        raise ValueError(f"prompts on frames {sorted(pending)}: the stream ended at frame {f}")
