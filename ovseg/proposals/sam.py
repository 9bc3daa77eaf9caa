"""Class-agnostic mask proposals from SAM: prompts (points, boxes, rough masks, scribbles) and
the automatic grid.

:class:`Proposer` wraps ``segment_anything.SamPredictor``. ``set_image`` computes the image
embedding once and keeps the last few in a small cache keyed by the image's content, so further
prompts on the same image cost only the prompt encoder and mask decoder.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.proposals.prompts import Prompt
from ovseg.structures import Masks, image_key

_MASK_PROMPT_LOGIT = 8.0


def _resize_longest_side(target_length: int):
    """SAM's ``ResizeLongestSide`` with each side at least one pixel, so very elongated images
    (e.g. 30000 x 20, whose short side would round to 0) are embedded instead of refused."""
    from segment_anything.utils.transforms import ResizeLongestSide

    class _AtLeastOnePixel(ResizeLongestSide):
        @staticmethod
        def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
            newh, neww = ResizeLongestSide.get_preprocess_shape(oldh, oldw, long_side_length)
            return max(1, newh), max(1, neww)

    return _AtLeastOnePixel(target_length)


class Proposer:
    """SAM proposals for one image at a time.

    Args:
        sam: a ``segment_anything.modeling.Sam``.
        cache_size: how many image embeddings to keep (an LRU keyed by image content).
        keep_block_input: also keep the input of the encoder's last block with each embedding
            (:attr:`block_input`; Trident reads SAM's last-block attention from it).
    """

    def __init__(self, sam, cache_size: int = 4, keep_block_input: bool = False):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam)
        self.predictor.transform = _resize_longest_side(sam.image_encoder.img_size)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._key: str | None = None
        self.lock = threading.RLock()
        self.encoder_calls = 0
        self.keep_block_input = keep_block_input
        self._block_input = None

    @property
    def model(self):
        return self.predictor.model

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._key is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return tuple(self.predictor.original_size)

    @property
    def block_input(self) -> torch.Tensor:
        """The current image's input to the encoder's last block, ``(1, Hg, Wg, C)``."""
        if self._key is None or self._block_input is None:
            raise RuntimeError("no image set with keep_block_input=True: call set_image first")
        return self._block_input

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next ``set_image`` runs the encoder)."""
        with self.lock:
            self._cache.clear()
            self._key = None
            self.predictor.reset_image()

    def set_image(self, image: np.ndarray) -> bool:
        """Embed ``image`` (RGB uint8 (H, W, 3)) unless cached. Returns True if it was computed."""
        key = image_key(image)
        with self.lock:
            if key == self._key:
                return False
            p = self.predictor
            cached = self._cache.get(key)
            if cached is not None and (cached[3] is not None or not self.keep_block_input):
                self._cache.move_to_end(key)
                p.features, p.original_size, p.input_size, self._block_input = self._cache[key]
                p.is_image_set = True
                self._key = key
                return False
            captured = []
            hook = None
            if self.keep_block_input:
                last = p.model.image_encoder.blocks[-1]
                hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
            try:
                with torch.inference_mode():
                    p.set_image(image, image_format="RGB")
            finally:
                if hook is not None:
                    hook.remove()
            self.encoder_calls += 1
            self._key = key
            self._block_input = captured[-1] if captured else None
            self._cache[key] = (p.features, p.original_size, p.input_size, self._block_input)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return True

    def predict(self, prompt: Prompt) -> Masks:
        """Masks for a validated :class:`~ovseg.proposals.prompts.Prompt` on the current image.

        One object per box (points and a rough mask join a single box); without boxes, the points
        (given, or sampled from the rough mask or scribble) are one object. A single point gives
        SAM's three candidates and keeps the one with the highest predicted IoU, as
        ``SamPredictor`` recommends; other prompts ask for one mask.
        """
        with self.lock, torch.inference_mode():
            if self._key is None:
                raise RuntimeError("no image set: call set_image(image) first")
            points, labels = prompt.all_points()
            mask_logits = self._mask_logits(prompt.mask) if prompt.mask is not None else None
            multimask = (
                prompt.boxes is None
                and points is not None
                and len(points) == 1
                and mask_logits is None
            )
            if prompt.boxes is not None and len(prompt.boxes) > 1:
                return self._predict_boxes(prompt.boxes)
            box = None if prompt.boxes is None else prompt.boxes[0]
            masks, scores = self._predict_one(points, labels, box, mask_logits, multimask)
            best = int(np.argmax(scores))
            return Masks.from_masks(masks[best : best + 1], scores[best : best + 1])

    def _predict_one(self, points, labels, box, mask_logits, multimask: bool):
        """``SamPredictor.predict`` for one object, with the scores read as float32 (under
        bfloat16 autocast they come out in bfloat16, which numpy cannot hold)."""
        p = self.predictor

        def tensor(x, dtype=torch.float):
            return torch.as_tensor(x, dtype=dtype, device=p.device)[None]

        coords = point_labels = box_t = mask_t = None
        if points is not None:
            coords = tensor(p.transform.apply_coords(points, p.original_size))
            point_labels = tensor(labels, torch.int)
        if box is not None:
            box_t = tensor(p.transform.apply_boxes(box, p.original_size))
        if mask_logits is not None:
            mask_t = tensor(mask_logits)
        masks, scores, _ = p.predict_torch(coords, point_labels, box_t, mask_t, multimask)
        return masks[0].cpu().numpy(), scores[0].float().cpu().numpy()

    def _predict_boxes(self, boxes: np.ndarray) -> Masks:
        p = self.predictor
        tboxes = p.transform.apply_boxes_torch(
            torch.as_tensor(boxes, device=p.device), p.original_size
        )
        masks, scores, _ = p.predict_torch(None, None, boxes=tboxes, multimask_output=False)
        return Masks.from_masks(masks[:, 0].cpu().numpy(), scores[:, 0].float().cpu().numpy())

    def _mask_logits(self, mask: np.ndarray) -> np.ndarray:
        """bool (H, W) -> SAM's low-resolution mask prompt (1, 4h, 4w) in its padded frame."""
        p = self.predictor
        side = 4 * p.model.prompt_encoder.image_embedding_size[0]
        h, w = p.original_size
        scale = side / max(h, w)
        nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        t = torch.from_numpy(mask.astype(np.float32))[None, None]
        small = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)[0, 0]
        logits = torch.full((side, side), -_MASK_PROMPT_LOGIT)
        logits[:nh, :nw] = torch.where(small > 0.5, _MASK_PROMPT_LOGIT, -_MASK_PROMPT_LOGIT)
        return logits[None].numpy()
