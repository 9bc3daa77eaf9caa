"""What grounding answers: the candidate :class:`Region` objects and the
:class:`GroundingResult` of one phrase (best match, ranked candidates, drawing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovseg.grounding.grasp import grasp_point
from ovseg.viz import palette

__all__ = ["GroundingResult", "Region"]


@dataclass
class Region:
    """One candidate region scored against a phrase.

    Attributes:
        index: position in the candidate list (``Masks`` order).
        mask: bool (H, W).
        box: (x0, y0, x1, y1) int pixels, x1 and y1 exclusive.
        score: the phrase's softmax probability in [0, 1] (see the module docstring).
        similarity: cosine between region and phrase embeddings, in [-1, 1].
        proposal_score: the proposer's quality score (SAM predicted IoU; 1 for hand-made masks).
    """

    index: int
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int]
    score: float
    similarity: float
    proposal_score: float

    @cached_property
    def point(self) -> tuple[int, int]:
        """The grasp point ``(x, y)`` (see :func:`grasp_point`)."""
        return grasp_point(self.mask)


@dataclass
class GroundingResult:
    """The answer to one phrase.

    Attributes:
        phrase: the phrase as given (stripped).
        candidates: the eligible regions, ranked best first.
        matches: the answer: ``candidates[:1]`` without a threshold, else every candidate with
            ``score >= threshold``; empty when nothing qualifies.
        rejected: candidate index -> why it left the ranking (a negative or the category test).
        threshold: the threshold used, or None.
        image: the RGB uint8 (H, W, 3) image, for drawing.
    """

    phrase: str
    candidates: list[Region]
    matches: list[Region]
    rejected: dict[int, str] = field(default_factory=dict)
    threshold: float | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def found(self) -> bool:
        return bool(self.matches)

    @property
    def best(self) -> Region | None:
        return self.matches[0] if self.matches else None

    @property
    def mask(self) -> np.ndarray | None:
        """bool (H, W) of the best match, or None."""
        return None if self.best is None else self.best.mask

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        return None if self.best is None else self.best.box

    @property
    def score(self) -> float | None:
        return None if self.best is None else self.best.score

    @property
    def point(self) -> tuple[int, int] | None:
        """Grasp point ``(x, y)`` of the best match (``mask[y, x]`` is True), or None."""
        return None if self.best is None else self.best.point

    @property
    def scores(self) -> np.ndarray:
        """float32 (M,): the ranked candidates' scores, non-increasing."""
        return np.asarray([r.score for r in self.candidates], np.float32)

    def overlay(self, alpha: float = 0.45, *, label: bool = True) -> Image.Image:
        """The matches drawn on the image: tinted mask, box, grasp point (a ringed cross) and
        ``phrase score`` text. Returns an RGB ``PIL.Image`` of the image size."""
        if self.image is None:
            raise RuntimeError("this result holds no image to draw on")
        out = self.image.astype(np.float32)
        colours = palette(max(len(self.matches), 1))
        for region, colour in zip(self.matches, colours, strict=False):
            out[region.mask] = (1 - alpha) * out[region.mask] + alpha * colour
        canvas = Image.fromarray(out.round().astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        size = int(np.clip(min(canvas.size) / 24, 10, 20))
        try:
            font = ImageFont.load_default(size=size)
        except (OSError, ImportError):  # Pillow without FreeType
            font = ImageFont.load_default()
        for region, colour in zip(self.matches, colours, strict=False):
            c = tuple(int(v) for v in colour)
            x0, y0, x1, y1 = region.box
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=c, width=2)
            x, y = region.point
            r = max(3, size // 2)
            draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=2)
            draw.line([x - r, y, x + r, y], fill=c, width=2)
            draw.line([x, y - r, x, y + r], fill=c, width=2)
            if label:
                text = f"{self.phrase} {region.score:.2f}"
                draw.text(
                    (x0 + 2, max(y0 - size - 2, 0)),
                    text,
                    fill=c,
                    font=font,
                    stroke_width=2,
                    stroke_fill=(0, 0, 0),
                )
        return canvas
