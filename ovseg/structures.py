"""Data types shared by the stages: class-agnostic masks of one image and their boxes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Masks", "image_key", "mask_class_scores", "masks_to_boxes"]


@dataclass
class Masks:
    """N class-agnostic masks of one image.

    Attributes:
        masks: bool (N, H, W), input-image size.
        scores: float32 (N,), SAM's predicted IoU of each mask.
        boxes: float32 (N, 4), XYXY pixels with x1, y1 exclusive (0 where a mask is empty).
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __repr__(self) -> str:
        h, w = self.masks.shape[1:] if self.masks.ndim == 3 else ("?", "?")
        scores = np.asarray(self.scores)
        span = f", scores {scores.min():.3f}..{scores.max():.3f}" if scores.size else ""
        return f"Masks({len(self)} masks of {h}x{w}{span})"

    def __getitem__(self, index) -> Masks:
        index = np.atleast_1d(np.arange(len(self))[index])
        return Masks(self.masks[index], self.scores[index], self.boxes[index])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @classmethod
    def from_masks(cls, masks: np.ndarray, scores: np.ndarray | None = None) -> Masks:
        """Build from bool (N, H, W) masks; boxes are derived, scores default to 1."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
        n = masks.shape[0]
        scores = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
        return cls(masks, scores, masks_to_boxes(masks))

    @classmethod
    def cat(cls, items: list[Masks], shape: tuple[int, int]) -> Masks:
        if not items:
            return cls(
                np.zeros((0, *shape), bool), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
            )
        return cls(
            np.concatenate([m.masks for m in items]),
            np.concatenate([m.scores for m in items]),
            np.concatenate([m.boxes for m in items]),
        )


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """bool (N, H, W) -> float32 (N, 4) XYXY, x1/y1 exclusive; empty masks give zeros."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    nonempty = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - np.argmax(rows[:, ::-1], axis=1)
    boxes[~nonempty] = 0
    return boxes


def image_key(image: np.ndarray) -> str:
    """A content hash of an image array, used to cache embeddings."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


def mask_class_scores(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mean class probability inside each mask: bool (N, H, W), float (K, H, W) -> float32
    (N, K) in [0, 1] (an empty mask scores 0)."""
    n = masks.shape[0]
    k = probs.shape[0]
    if n == 0:
        return np.zeros((0, k), np.float32)
    flat = masks.reshape(n, -1).astype(np.float32)
    area = flat.sum(1, keepdims=True)
    sums = flat @ np.asarray(probs).reshape(k, -1).T.astype(np.float32)
    return np.clip(sums / np.maximum(area, 1.0), 0.0, 1.0).astype(np.float32)
