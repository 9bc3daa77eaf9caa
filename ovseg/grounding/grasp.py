"""Robot-facing helpers: a grasp target inside a mask, and a phrase from an instruction."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["grasp_point", "phrase_from_instruction"]


def grasp_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel ``(x, y)`` of a bool (H, W) mask farthest from the mask's border.

    Depth is the number of erosions a pixel survives, alternating 4- and 8-neighbour steps (an
    octagonal approximation of the Euclidean distance; outside the image counts as outside the
    mask). Among the deepest pixels, the one nearest their centroid is returned (ties: first in
    row-major order), so the point always lies inside the mask: ``mask[y, x]`` is True.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != np.bool_:
        raise ValueError(f"mask must be a bool (H, W) array, got {m.dtype} {m.shape}")
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        raise ValueError("mask is empty: no pixel is set")
    oy, ox = ys.min(), xs.min()
    crop = m[oy : ys.max() + 1, ox : xs.max() + 1]
    depth = np.zeros(crop.shape, np.int32)
    cur, step = np.pad(crop, 1), 0
    while True:
        inner = cur[1:-1, 1:-1]
        if not inner.any():
            break
        depth += inner
        eroded = inner & cur[:-2, 1:-1] & cur[2:, 1:-1] & cur[1:-1, :-2] & cur[1:-1, 2:]
        if step % 2:
            eroded &= cur[:-2, :-2] & cur[:-2, 2:] & cur[2:, :-2] & cur[2:, 2:]
        cur, step = np.pad(eroded, 1), step + 1
    dy, dx = np.nonzero(depth == depth.max())
    i = int(np.argmin((dy - dy.mean()) ** 2 + (dx - dx.mean()) ** 2))
    return int(dx[i] + ox), int(dy[i] + oy)


_INSTRUCTION = re.compile(
    r"^(?:please\s+)?(?:(?:pick\s+up|pick|grab|grasp|take|get|fetch|find|locate|select|touch|"
    r"push|move|point\s+(?:to|at)|show\s+me|hand\s+me|bring\s+me|give\s+me)\s+)?"
    r"(?:the|a|an)?\s*",
    re.IGNORECASE,
)


def phrase_from_instruction(text: str) -> str:
    """Strip a leading robot verb and article: ``"pick up the blue cup."`` -> ``"blue cup"``.
    Returns the stripped input when nothing would be left."""
    if not isinstance(text, str):
        raise TypeError(f"instruction must be a string, got {type(text).__name__}")
    phrase = _INSTRUCTION.sub("", text.strip(), count=1).strip(" .!?")
    return phrase or text.strip()
