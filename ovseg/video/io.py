"""Video input and output with PyAV (``av``: FFmpeg's codecs inside the wheel).

:func:`open_frames` turns a video file, a folder of frames (in the order of
:func:`ovseg.proposals.frames.frame_paths`: by the numbers in their names when every name is
one, else by name), a camera index or an iterable of images into one iterator of
``(index, RGB uint8 (H, W, 3))``, with the frame selection (``start``, ``end``, ``stride``,
``max_frames``) applied and every check that needs no decoding (missing, unreadable, empty or
truncated file; a folder without images; frames of different sizes) done when it is opened.
:class:`VideoWriter` encodes frames to a video file written under a temporary name and renamed
when closed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.image import load_image
from ovseg.proposals.frames import FRAME_SUFFIXES, frame_paths

__all__ = ["FRAME_SUFFIXES", "VIDEO_SUFFIXES", "FrameSource", "VideoWriter", "open_frames"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
DEFAULT_FPS = 10.0


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency
        raise ImportError("video needs PyAV: pip install av") from e
    return av


@dataclass
class FrameSource:
    """Frames of one input, selected and checked: iterate for ``(index, RGB uint8 (H, W, 3))``.

    Attributes:
        name: the input as given (path, ``camera N`` or ``frames``).
        fps: frames per second of the source (``DEFAULT_FPS`` for folders and iterables).
        size: ``(H, W)`` when known before decoding (files and folders), else None.
        count: how many frames the selection yields when known, else None.
    """

    name: str
    fps: float
    size: tuple[int, int] | None
    count: int | None
    _frames: Iterator[tuple[int, np.ndarray]]

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self._frames


def open_frames(
    source: Any,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    max_frames: int | None = None,
) -> FrameSource:
    """Open ``source`` and select frames ``start, start + stride, ...`` below ``end``, at most
    ``max_frames`` of them. Indices are the source's own frame numbers (0-based).

    Args:
        source: a video file path, a folder of frames, a camera index (``int`` or a string of
            digits: ``/dev/videoN``), or an iterable of images (anything
            :func:`ovseg.image.load_image` takes; a generator for streams).

    Raises:
        FileNotFoundError: a missing file or folder, or a camera that is not there.
        ValueError: an unreadable, empty or truncated video (named); a folder without images;
            frames of different sizes; bad selection values.
        TypeError: a source of another kind.
    """
    _check_selection(start, end, stride, max_frames)
    sel = dict(start=start, end=end, stride=stride, max_frames=max_frames)
    if isinstance(source, bool):
        raise TypeError("source must be a path, a camera index or an iterable of images")
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return _camera(int(source), sel)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"video input not found: {path}")
        return _folder(path, sel) if path.is_dir() else _video_file(path, sel)
    if isinstance(source, np.ndarray) or not isinstance(source, Iterable):
        raise TypeError(
            "source must be a video file, a folder of frames, a camera index or an iterable of "
            f"images; got {type(source).__name__}"
        )
    frames = (load_image(f) for f in source)
    return FrameSource("frames", DEFAULT_FPS, None, None, _select(_checked(frames, "frames"), sel))


def _check_selection(start, end, stride, max_frames) -> None:
    for name, value in (("start", start), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end <= start):
        raise ValueError(f"end must be an int > start ({start}), got {end!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ValueError(f"max_frames must be an int >= 1, got {max_frames!r}")


def _selected(count: int, start: int, end: int | None, stride: int, max_frames: int | None):
    stop = count if end is None else min(end, count)
    n = max(0, -(-(stop - start) // stride))
    return n if max_frames is None else min(n, max_frames)


def _select(frames: Iterator[np.ndarray], sel: dict) -> Iterator[tuple[int, np.ndarray]]:
    start, end, stride, cap = sel["start"], sel["end"], sel["stride"], sel["max_frames"]
    taken = 0
    for index, frame in enumerate(frames):
        if end is not None and index >= end or cap is not None and taken >= cap:
            return
        if index >= start and (index - start) % stride == 0:
            taken += 1
            yield index, frame


def _checked(frames: Iterable[np.ndarray], name: str) -> Iterator[np.ndarray]:
    size = None
    for i, frame in enumerate(frames):
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise ValueError(
                f"{name}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, the first frame is "
                f"{size[1]}x{size[0]}; every frame of a clip must have one size"
            )
        yield frame


def _folder(path: Path, sel: dict) -> FrameSource:
    files = frame_paths(path)
    from PIL import Image

    try:
        with Image.open(files[0]) as im:
            width, height = im.size
    except OSError as e:
        raise ValueError(f"cannot read frame {files[0]}: {e}") from e
    count = _selected(len(files), **sel)
    frames = (load_image(f) for f in files)
    return FrameSource(str(path), DEFAULT_FPS, (height, width), count,
                       _select(_checked(frames, str(path)), sel))  # fmt: skip


def _video_file(path: Path, sel: dict) -> FrameSource:
    """Demux every packet once (no decoding) to refuse an unreadable, empty or truncated file
    now, and to count its frames."""
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read video {path} (not a video, or truncated): {e}") from e
    with container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
        size = (stream.codec_context.height, stream.codec_context.width)
        packets, last = 0, None
        try:
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
                    if packet.pts is not None:
                        last = packet.pts if last is None else max(last, packet.pts)
        except av.error.FFmpegError as e:
            raise ValueError(f"video {path} is truncated or corrupt: {e}") from e
        if packets == 0:
            raise ValueError(f"video {path} holds no frames")
        if stream.frames and packets < stream.frames:
            raise ValueError(
                f"video {path} is truncated: {packets} of its {stream.frames} frames are there"
            )
        if container.duration and last is not None and stream.time_base:
            end = float((last - (stream.start_time or 0)) * stream.time_base) + 1.0 / fps
            expected = container.duration / 1e6
            if end < expected - 1.5 / fps:
                raise ValueError(
                    f"video {path} is truncated: its frames end at {end:.2f} s of the "
                    f"{expected:.2f} s its header announces"
                )
    count = _selected(packets, **sel)
    return FrameSource(str(path), fps, size, count, _select(_decode(path), sel))


def _decode(path: Path) -> Iterator[np.ndarray]:
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise ValueError(f"video {path} is corrupt: {e}") from e


def _camera(index: int, sel: dict) -> FrameSource:
    av = _av()
    device = f"/dev/video{index}"
    if not Path(device).exists():
        raise FileNotFoundError(f"camera {index} not found ({device} does not exist)")
    try:
        container = av.open(device, format="v4l2")
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot open camera {index} ({device}): {e}") from e
    stream = container.streams.video[0]
    fps = float(stream.average_rate or DEFAULT_FPS)

    def frames() -> Iterator[np.ndarray]:
        with container:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")

    return FrameSource(f"camera {index}", fps, None, None, _select(frames(), sel))


class VideoWriter:
    """Encode RGB uint8 frames of one size to ``path`` (H.264 in mp4/mkv/mov, VP9 in webm).

    The file is written under a temporary name in the same folder and renamed to ``path`` by
    :meth:`close`, so a reader never sees a half-written video; :meth:`abort` removes it.
    Odd sizes are padded by one black row or column (4:2:0 video needs even sides).
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 23):
        av = _av()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
        if codec not in av.codecs_available:  # pragma: no cover - the wheel carries both
            codec = "mpeg4"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=suffix)  # fmt: skip
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(tmp, "w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._stream.thread_type = "AUTO"
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 (H, W, 3) frame; every frame has the first frame's size."""
        av = _av()
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._size is None:
            self._size = (h, w)
            self._stream.height, self._stream.width = h + h % 2, w + w % 2
        elif self._size != (h, w):
            raise ValueError(f"frame {self.frames} is {w}x{h}, the video is "
                             f"{self._size[1]}x{self._size[0]}")  # fmt: skip
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush, close and move the file into place; returns its path."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (the target is left as it was)."""
        try:
            self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
