"""Video frames for propagation: a folder of images, a sequence, or a stream, read on demand.

A folder or a sequence (list, tuple, ``(T, H, W, 3)`` array) is random access and of known
length; any other iterable (a generator, a video decoder) is a stream, read once, in order.
Each frame goes through :func:`ovseg.image.load_image`, so it is RGB uint8 ``(H, W, 3)``; all
frames of a clip must share one size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg.image import load_image

__all__ = ["FRAME_SUFFIXES", "ClipFrames", "frame_paths", "open_frames"]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ClipFrames:
    """Random access to the frames of a clip of known length, each loaded when asked for.

    Attributes:
        size: (H, W) shared by every frame.
    """

    def __init__(self, items: Sequence, size: tuple[int, int]):
        self._items = items
        self.size = size

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> np.ndarray:
        frame = load_image(self._items[index])
        if frame.shape[:2] != self.size:
            raise ValueError(
                f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but the clip's first frame "
                f"is {self.size[1]}x{self.size[0]}; all frames must share one size"
            )
        return frame


def open_frames(frames) -> ClipFrames | Iterator[np.ndarray]:
    """A :class:`ClipFrames` for a folder or a sequence, an iterator of frames for a stream.

    A folder's images are in :func:`frame_paths` order.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a folder without images, an empty sequence, frames of different sizes.
        TypeError: something that is neither a folder, a sequence nor an iterable.
    """
    if isinstance(frames, (str, os.PathLike)):
        return _open_folder(Path(frames))
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise ValueError(
                f"frames as one array must be (T, H, W, 3) or (T, H, W, 4), got shape "
                f"{frames.shape}; give a single image as a list of one frame"
            )
        frames = list(frames)
    if isinstance(frames, Sequence):
        if len(frames) == 0:
            raise ValueError("frames is empty: give at least one frame")
        first = load_image(frames[0])
        size = first.shape[:2]
        for i, item in enumerate(frames):
            shape = getattr(item, "shape", None)
            if shape is not None and tuple(shape[:2]) != size:
                raise ValueError(
                    f"frame {i} has shape {tuple(shape)} but frame 0 is {size}; "
                    "all frames must share one size"
                )
        return ClipFrames(frames, size)
    if isinstance(frames, Iterable):
        return iter(frames)
    raise TypeError(
        "frames must be a folder of images, a sequence of frames (list, tuple, (T, H, W, 3) "
        f"array) or an iterable of frames; got {type(frames).__name__}"
    )


def frame_paths(folder: Path) -> list[Path]:
    """The image files of a frame folder (suffixes in ``FRAME_SUFFIXES``), in frame order: by
    the number in their names when every stem is an integer ("0.jpg", "00012.jpg", as Meta's
    predictor reads a folder), by name otherwise.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: a file instead of a folder, or no images in it.
    """
    if not folder.exists():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder of frames")
    paths = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
    if not paths:
        raise ValueError(
            f"no images in folder {folder} (looked for {', '.join(FRAME_SUFFIXES)} files)"
        )
    if all(p.stem.isdigit() for p in paths):
        return sorted(paths, key=lambda p: (int(p.stem), p.name))
    return sorted(paths, key=lambda p: p.name)


def _open_folder(folder: Path) -> ClipFrames:
    paths = frame_paths(folder)
    sizes = {}
    for p in paths:
        with Image.open(p) as im:
            sizes.setdefault(im.size[::-1], p)
    if len(sizes) > 1:
        (s0, p0), (s1, p1) = list(sizes.items())[:2]
        raise ValueError(
            f"frames of different sizes in {folder}: {p0.name} is {s0[1]}x{s0[0]}, "
            f"{p1.name} is {s1[1]}x{s1[0]}"
        )
    return ClipFrames(paths, next(iter(sizes)))
