"""Point, box and mask prompts through SAM 3's tracker (SAM 2 style), one image at a time.

:class:`Sam3TrackerProposer` has :class:`~ovseg.proposals.sam.Proposer`'s interface
(``set_image`` with an embedding cache, ``predict(Prompt)``, ``image_shape``, ``clear_cache``,
``lock``, ``encoder_calls``) and computes what the official ``transformers`` pipeline computes
(``Sam3TrackerProcessor`` -> ``Sam3TrackerModel`` -> ``post_process_masks``) with the tracker of
a :class:`~ovseg.proposals.sam3.Sam3Bundle`'s ``Sam3VideoModel``:

- the image goes through SAM 3's image processor and the detector's ViT once (the bundle's
  cache, shared with text prompts), then the tracker's own neck; the two high-resolution maps
  are projected for the mask decoder and the lowest-resolution one gets the "no memory"
  embedding (as ``Sam3TrackerModel`` loads the same checkpoint);
- points are ``(x, y)`` pixels scaled by ``side / W`` and ``side / H`` (float32), boxes likewise;
  a mask prompt is logits over the whole image at the mask decoder's input size;
- masks are the low-resolution logits resized bilinearly to the input size, kept above 0.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.proposals.prompts import Prompt, predict_prompt, square_mask_prompt
from ovseg.proposals.sam3 import Sam3Bundle
from ovseg.structures import Masks

__all__ = ["Sam3TrackerProposer"]

MASK_THRESHOLD = 0.0


class Sam3TrackerProposer:
    """SAM 3 tracker proposals for one image at a time.

    Args:
        sam: a :class:`~ovseg.proposals.sam3.Sam3Bundle` holding a ``Sam3VideoModel`` (a
            detector alone embeds images but refuses prompts: :meth:`predict` raises).
        cache_size: tracker features kept (an LRU keyed by image content; the ViT features
            themselves live in the bundle's cache).
    """

    def __init__(self, sam: Sam3Bundle, cache_size: int = 4):
        if not isinstance(sam, Sam3Bundle):
            raise TypeError(f"sam must be a Sam3Bundle, got {type(sam).__name__}")
        self.sam = sam
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._key: str | None = None
        self._features: list[torch.Tensor] | None = None
        self._orig_hw: tuple[int, int] | None = None
        self.lock = threading.RLock()

    @property
    def tracker(self):
        """The tracker (``Sam3TrackerVideoModel`` without a vision encoder of its own)."""
        return self.sam.model.tracker_model

    @property
    def encoder_calls(self) -> int:
        """Image encoder passes so far (the bundle's, shared with text prompts)."""
        return self.sam.encoder_calls

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def side(self) -> int:
        """Side of the square model input in pixels (1008 for the official model)."""
        return self.sam.side

    @property
    def low_res_side(self) -> int:
        """Side of the low-resolution mask logits (288 for the official model)."""
        return int(self.tracker.prompt_encoder.mask_input_size[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._key is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._orig_hw

    @property
    def features(self) -> list[torch.Tensor]:
        """The tracker's image embeddings: two projected high-resolution maps and the image
        embedding (1, C, side/14, side/14) with the "no memory" embedding added."""
        if self._key is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._features

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next ``set_image`` runs the encoder)."""
        with self.lock:
            self._cache.clear()
            self._key = self._features = self._orig_hw = None

    def set_image(self, image: np.ndarray) -> bool:
        """Embed ``image`` (RGB uint8 (H, W, 3)) unless cached. Returns True if the image
        encoder ran (False when this proposer or the bundle had it)."""
        with self.lock:
            calls = self.sam.encoder_calls
            key, vision, hw = self.sam.encode(image)
            if key == self._key:
                return False
            if key not in self._cache:
                tracked = self._tracker_features(vision) if self.sam.has_tracker else None
                self._cache[key] = (tracked, hw)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self._key = key
            self._features, self._orig_hw = self._cache[key]
            return self.sam.encoder_calls > calls

    def _tracker_features(self, vision) -> list[torch.Tensor]:
        """What ``Sam3TrackerModel.get_image_embeddings`` returns, from the shared ViT output."""
        model, tracker = self.sam.model, self.tracker
        with torch.inference_mode():
            maps, _ = model.get_vision_features_for_tracker(vision)
            maps[-1] = maps[-1] + tracker.no_memory_embedding
            return [
                m.permute(1, 2, 0).view(1, -1, *size)
                for m, size in zip(maps, tracker.backbone_feature_sizes, strict=True)
            ]

    def to_input_frame(self, xy) -> torch.Tensor:
        """(..., 2) ``(x, y)`` image pixels -> the model's input frame, as
        ``Sam3TrackerProcessor`` scales them (float32, times ``side / W`` and ``side / H``)."""
        h, w = self.image_shape
        xy = torch.as_tensor(np.asarray(xy, np.float32), device=self.device).clone()
        xy[..., 0] = xy[..., 0] * (self.side / w)
        xy[..., 1] = xy[..., 1] * (self.side / h)
        return xy

    def decode(self, points, labels, boxes, mask_input, multimask_output: bool):
        """``Sam3TrackerModel.forward`` after the image encoder, on prompts already in the input
        frame: points (1, B, P, 2) and labels (1, B, P), boxes (1, B, 4), mask logits
        (1, 1, h, w), each or None. Returns ``(low_res, iou)``: (B, M, h, w), (B, M)."""
        tracker = self.tracker
        embeddings = self.features
        pe = tracker.get_image_wide_positional_embeddings()
        if points is None and boxes is None:
            points = embeddings[-1].new_zeros((1, 1, 1, 2))
            labels = -torch.ones((1, 1, 1), dtype=torch.int32, device=self.device)
        sparse, dense = tracker.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=boxes, input_masks=mask_input
        )
        low, iou, _, _ = tracker.mask_decoder(
            image_embeddings=embeddings[-1],
            image_positional_embeddings=pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            high_resolution_features=embeddings[:-1],
        )
        return low[0], iou[0]

    def predict_arrays(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tracker on the current image (the official pipeline's numbers).

        Args:
            point_coords: (P, 2) ``(x, y)`` pixels, or None; point_labels: (P,) 1/0.
            box: (4,) XYXY pixels for one object, or (B, 4) for B objects, or None.
            mask_input: (1, h, w) low-resolution logits (e.g. from a previous call).
            multimask_output: three candidates, else one.

        Returns:
            ``(masks, scores, low_res)``: bool (M, H, W), float32 (M,), float32 (M, h, w) for
            one object; with B boxes each gains a leading B axis.
        """
        with self.lock, torch.inference_mode():
            points = labels = boxes = masks_in = None
            if point_coords is not None:
                points = self.to_input_frame(point_coords)[None, None]
                labels = torch.as_tensor(np.asarray(point_labels), device=self.device)
                labels = labels.to(torch.int64)[None, None]
            if box is not None:
                corners = self.to_input_frame(np.asarray(box, np.float32).reshape(-1, 2, 2))
                boxes = corners.reshape(1, -1, 4)
            if mask_input is not None:
                masks_in = torch.as_tensor(mask_input, dtype=torch.float32, device=self.device)
                masks_in = masks_in.reshape(1, 1, *masks_in.shape[-2:])
            low, iou = self.decode(points, labels, boxes, masks_in, multimask_output)
            up = F.interpolate(low, self.image_shape, mode="bilinear", align_corners=False)
            out = ((up > MASK_THRESHOLD).cpu().numpy(), iou.float().cpu().numpy())
            out = (*out, low.float().cpu().numpy())
            return tuple(a[0] for a in out) if len(low) == 1 else out

    def predict(self, prompt: Prompt) -> Masks:
        """Masks for a validated :class:`~ovseg.proposals.prompts.Prompt` on the current image.

        The policy of SAM 1's and SAM 2's proposers: one object per box (points and a rough
        mask join a single box); a single point gives three candidates and keeps the one with
        the highest predicted IoU; other prompts ask for one mask.
        """
        with self.lock:
            if not self.sam.has_tracker:
                raise ValueError(
                    f"{self.sam.name} is SAM 3's detector alone ({type(self.sam.model).__name__})"
                    ": point, box and mask prompts need its tracker; load a Sam3VideoModel "
                    "checkpoint such as facebook/sam3 (sam='sam3')"
                )
            if self._key is None:
                raise RuntimeError("no image set: call set_image(image) first")
            return predict_prompt(prompt, self.predict_arrays, self.low_res_side)

    def _mask_logits(self, mask: np.ndarray) -> np.ndarray:
        """bool (H, W) -> a mask prompt (1, h, w): the whole image resized, +-8."""
        return square_mask_prompt(mask, self.low_res_side)
