"""Propagators: carry object masks from one frame to the next.

A propagator holds the objects being tracked, each under an integer id. Per frame, the
stream calls :meth:`Propagator.step` with the new frame (every object's mask on it), then,
on keyframes, :meth:`Propagator.add_many` for objects found or re-anchored on that same frame.
:func:`default_propagator` picks the one that fits the Segmenter's SAM.

:class:`SamPromptPropagator` (SAM 1) prompts SAM on the new frame with each object's box from
the previous frame (grown by a margin) and its previous low-resolution mask logits, all
objects in one batched decoder call: a few decoder calls per object instead of the automatic
grid's hundreds of prompts. Its state (ids, boxes, logits) is small and saved for resuming.

:class:`Sam2VideoPropagator` (SAM 2) carries the objects with SAM 2's memory
(:class:`ovseg.proposals.tracker.VideoTracker`, equal to Meta's ``SAM2VideoPredictor``): a new
object's mask is its conditioning frame, a re-anchored one a correction through the recent
memory. Its memory cannot be saved, so a resumed run with SAM 2 starts over.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from ovseg.proposals.sam import Proposer
from ovseg.structures import masks_to_boxes

__all__ = ["Propagator", "Sam2VideoPropagator", "SamPromptPropagator", "default_propagator"]


def default_propagator(segmenter) -> Propagator:
    """SAM 2's video memory when the Segmenter's SAM is a SAM 2 model, else SAM 1 prompted from
    each object's previous box and mask.

    A SAM 2 image model (``Sam2Model``, what a name builds) is replaced on the Segmenter by the
    ``Sam2VideoModel`` of the same specification, which serves the keyframes' proposals too
    (its image path is the same), so one set of weights is loaded.
    """
    from ovseg.proposals.sam2 import Sam2Proposer

    proposer = segmenter.proposer
    if not isinstance(proposer, Sam2Proposer):
        return SamPromptPropagator(proposer)
    model = segmenter.models.video_sam()
    return Sam2VideoPropagator(model)


class Propagator(ABC):
    """Objects tracked from frame to frame, by integer id."""

    resumable = False
    """Whether :meth:`state_dict` saves everything needed to continue exactly."""

    @abstractmethod
    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move to ``frame`` (RGB uint8 (H, W, 3)); returns ``(ids int64 (N,), masks bool
        (N, H, W), scores float32 (N,))`` of every object on it."""

    @abstractmethod
    def add(self, track_id: int, mask: np.ndarray) -> None:
        """Track (or re-anchor) object ``track_id`` with ``mask`` bool (H, W) on the current
        frame (the one of the last :meth:`step`)."""

    def add_many(self, masks: dict[int, np.ndarray]) -> None:
        """:meth:`add` for several objects on the current frame at once."""
        for track_id, mask in masks.items():
            self.add(track_id, mask)

    @abstractmethod
    def remove(self, track_id: int) -> None:
        """Stop tracking ``track_id`` (no error when it is not tracked)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays from which :meth:`load_state_dict` restores the tracked objects."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its state for resuming")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore a saved state")


class SamPromptPropagator(Propagator):
    """SAM 1 prompted on each frame from each object's previous box and mask.

    Args:
        proposer: the SAM :class:`~ovseg.proposals.sam.Proposer` (its embedding cache is
            shared with the keyframes' automatic grid).
        box_margin: the previous box grows by this fraction of its size on each side (at least
            ``min_margin`` pixels), so an object that moved stays inside its prompt.
        batch_size: objects decoded per call.
    """

    resumable = True

    def __init__(
        self, proposer: Proposer, *, box_margin: float = 0.1, min_margin: int = 4,
        batch_size: int = 64,
    ):  # fmt: skip
        if not box_margin >= 0:
            raise ValueError(f"box_margin must be >= 0, got {box_margin}")
        self.proposer = proposer
        self.box_margin, self.min_margin, self.batch_size = box_margin, min_margin, batch_size
        self._ids: list[int] = []
        self._boxes: dict[int, np.ndarray] = {}
        self._logits: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def step(self, frame: np.ndarray):
        proposer = self.proposer
        with proposer.lock, torch.inference_mode():
            proposer.set_image(frame)
            h, w = frame.shape[:2]
            if not self._ids:
                return np.zeros(0, np.int64), np.zeros((0, h, w), bool), np.zeros(0, np.float32)
            predictor = proposer.predictor
            all_masks, all_scores = [], []
            for i in range(0, len(self._ids), self.batch_size):
                ids = self._ids[i : i + self.batch_size]
                boxes = np.stack([self._grown(self._boxes[t], h, w) for t in ids])
                tboxes = predictor.transform.apply_boxes_torch(
                    torch.as_tensor(boxes, device=predictor.device), predictor.original_size
                )
                logits = torch.stack([self._logits[t] for t in ids]).to(predictor.device)
                masks, scores, low = predictor.predict_torch(
                    None, None, boxes=tboxes, mask_input=logits, multimask_output=False
                )
                masks = masks[:, 0].cpu().numpy()
                for t, mask, low_t in zip(ids, masks, low[:, :1].cpu(), strict=True):
                    self._logits[t] = low_t
                    if mask.any():
                        self._boxes[t] = masks_to_boxes(mask[None])[0]
                all_masks.append(masks)
                all_scores.append(scores[:, 0].float().cpu().numpy())
            return (
                np.asarray(self._ids, np.int64),
                np.concatenate(all_masks),
                np.concatenate(all_scores).astype(np.float32),
            )

    def _grown(self, box: np.ndarray, h: int, w: int) -> np.ndarray:
        x0, y0, x1, y1 = box
        mx = max(self.min_margin, self.box_margin * (x1 - x0))
        my = max(self.min_margin, self.box_margin * (y1 - y0))
        return np.array(
            [max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)], np.float32
        )

    def add(self, track_id: int, mask: np.ndarray) -> None:
        mask = np.asarray(mask, bool)
        if not mask.any():
            raise ValueError(f"object {track_id}: the mask is empty")
        with self.proposer.lock:
            if mask.shape != self.proposer.image_shape:
                shape = self.proposer.image_shape
                raise ValueError(f"object {track_id}: mask {mask.shape} on a frame of {shape}")
            logits = torch.from_numpy(self.proposer._mask_logits(mask))
        if track_id not in self._boxes:
            self._ids.append(int(track_id))
        self._boxes[track_id] = masks_to_boxes(mask[None])[0]
        self._logits[track_id] = logits

    def remove(self, track_id: int) -> None:
        if track_id in self._boxes:
            self._ids.remove(track_id)
            del self._boxes[track_id], self._logits[track_id]

    def state_dict(self) -> dict[str, np.ndarray]:
        ids = np.asarray(self._ids, np.int64)
        if not self._ids:
            return {"ids": ids, "boxes": np.zeros((0, 4), np.float32),
                    "logits": np.zeros((0, 1, 1, 1), np.float32)}  # fmt: skip
        return {
            "ids": ids,
            "boxes": np.stack([self._boxes[t] for t in self._ids]).astype(np.float32),
            "logits": torch.stack([self._logits[t] for t in self._ids]).float().numpy(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        ids = [int(t) for t in state["ids"]]
        self._ids = ids
        boxes, logits = state["boxes"], state["logits"]
        self._boxes = {t: np.asarray(b, np.float32) for t, b in zip(ids, boxes, strict=True)}
        self._logits = {t: torch.from_numpy(np.array(g)) for t, g in zip(ids, logits, strict=True)}


class Sam2VideoPropagator(Propagator):
    """SAM 2's video memory (:class:`~ovseg.proposals.tracker.VideoTracker`) over a stream.

    Args:
        model: a ``transformers.Sam2VideoModel``.
        offload_state_to_cpu: keep the tracking state on the CPU when the model is on a GPU.
    """

    def __init__(self, model, *, offload_state_to_cpu: bool = False):
        from ovseg.proposals.tracker import VideoTracker

        self.tracker = VideoTracker(model, offload_state_to_cpu=offload_state_to_cpu)

    def __len__(self) -> int:
        return len(self.tracker.obj_ids)

    def step(self, frame: np.ndarray):
        out = self.tracker.step(frame)
        return out.obj_ids, out.masks, out.scores.astype(np.float32)

    def add(self, track_id: int, mask: np.ndarray) -> None:
        self.add_many({track_id: mask})

    def add_many(self, masks: dict[int, np.ndarray]) -> None:
        if masks:
            self.tracker.add({int(t): np.asarray(m, bool) for t, m in masks.items()})

    def remove(self, track_id: int) -> None:
        self.tracker.remove(int(track_id))
