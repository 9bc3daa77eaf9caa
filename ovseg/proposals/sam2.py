"""SAM 2 proposals: prompts on one image with a ``transformers`` ``Sam2Model``.

:class:`Sam2Proposer` has :class:`~ovseg.proposals.sam.Proposer`'s interface (``set_image``
with an embedding cache, ``predict(Prompt)``, ``image_shape``, ``clear_cache``, ``lock``,
``encoder_calls``) and computes what Meta's ``SAM2ImagePredictor`` computes:

- the image is scaled to 0-1, resized to the model's square input (1024x1024 for the official
  models; bilinear with antialiasing, the aspect ratio is not kept) and normalised with
  ImageNet's mean and std; the encoder's lowest-resolution map gets the "no memory" embedding;
- points are ``(x, y)`` pixels scaled by ``side / W`` and ``side / H``; a box is two corner
  points with labels 2 and 3 placed before the other points; a padding point always follows;
- a mask prompt is 256x256 logits over the whole (resized) image;
- masks are the low-resolution logits resized bilinearly to the input size and thresholded at
  0; the returned low-resolution logits are clamped to [-32, 32].
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.proposals.prompts import Prompt, predict_prompt, square_mask_prompt
from ovseg.structures import Masks, image_key

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_THRESHOLD = 0.0
_BOX_LABELS = (2, 3)


def is_sam2_model(model) -> bool:
    """Whether ``model`` is a ``transformers`` SAM 2 image or video model."""
    return type(model).__name__ in ("Sam2Model", "Sam2VideoModel")


class Sam2Proposer:
    """SAM 2 proposals for one image at a time.

    Args:
        model: a ``transformers.Sam2Model`` (or ``Sam2VideoModel``: its image path is the same).
        cache_size: how many image embeddings to keep (an LRU keyed by image content).
    """

    def __init__(self, model, cache_size: int = 4):
        self.model = model.eval()
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._key: str | None = None
        self._features: list[torch.Tensor] | None = None
        self._orig_hw: tuple[int, int] | None = None
        self.lock = threading.RLock()
        self.encoder_calls = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def side(self) -> int:
        """Side of the square model input in pixels (1024 for the official models)."""
        return int(self.model.prompt_encoder.input_image_size)

    @property
    def low_res_side(self) -> int:
        """Side of the low-resolution mask logits (256 for the official models)."""
        return int(self.model.prompt_encoder.mask_input_size[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._key is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._orig_hw

    @property
    def features(self) -> list[torch.Tensor]:
        """The cached image features: two high-resolution maps (already projected for the mask
        decoder) and the image embedding (1, C, side/16, side/16)."""
        if self._key is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._features

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next ``set_image`` runs the encoder)."""
        with self.lock:
            self._cache.clear()
            self._key = self._features = self._orig_hw = None

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> normalised float32 (1, 3, side, side) on the model's device."""
        from torchvision.transforms import functional as TF

        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
        x = TF.resize(
            x.to(self.device),
            [self.side, self.side],
            interpolation=TF.InterpolationMode.BILINEAR,
            antialias=True,
        )
        return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)[None]

    def set_image(self, image: np.ndarray) -> bool:
        """Embed ``image`` (RGB uint8 (H, W, 3)) unless cached. Returns True if it was computed."""
        key = image_key(image)
        with self.lock:
            if key == self._key:
                return False
            if key in self._cache:
                self._cache.move_to_end(key)
                self._features, self._orig_hw = self._cache[key]
                self._key = key
                return False
            with torch.inference_mode():
                features = self.model.get_image_embeddings(self.preprocess(image))
            self.encoder_calls += 1
            self._key, self._features = key, list(features)
            self._orig_hw = (int(image.shape[0]), int(image.shape[1]))
            self._cache[key] = (self._features, self._orig_hw)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return True

    def to_input_frame(self, xy) -> torch.Tensor:
        """(..., 2) ``(x, y)`` image pixels -> the model's input frame, as Meta's transforms
        (float32, divided by the image size, times the input side)."""
        h, w = self.image_shape
        xy = torch.as_tensor(xy, dtype=torch.float32, device=self.device).clone()
        xy[..., 0] = xy[..., 0] / w
        xy[..., 1] = xy[..., 1] / h
        return xy * self.side

    def decode(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder on prompts already in the input frame (Meta's ``_predict`` before
        upsampling).

        Args:
            coords: float32 (B, N, 2) points (box corners first, labels 2 and 3) or None.
            labels: int (B, N) point labels or None.
            mask_input: (B or 1, 1, 256, 256) mask logits or None.
            multimask_output: three candidates per prompt, else one.

        Returns:
            ``(low_res, iou)``: logits (B, K, 256, 256), unclamped, and predicted IoU (B, K).
        """
        model = self.model
        s0, s1, embed = self.features
        pe = model.get_image_wide_positional_embeddings()
        if coords is None:
            n = 1 if mask_input is None else mask_input.shape[0]
            sparse = embed.new_zeros((n, 1, 0, embed.shape[1]))
        else:
            sparse = model.prompt_encoder._embed_points(coords[:, None], labels[:, None], True)
            sparse = sparse.transpose(0, 1) if mask_input is None else sparse
        if mask_input is None:
            dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense = dense.expand(1, -1, *embed.shape[-2:])
            b = 1
        else:
            dense = model.prompt_encoder.mask_embed(mask_input)
            b = max(dense.shape[0], sparse.shape[0])
            sparse = sparse.expand(b, -1, -1, -1) if sparse.shape[0] == 1 else sparse
        feats = [f.expand(b, -1, -1, -1) for f in (s0, s1, embed)]
        low, iou, _, _ = model.mask_decoder(
            image_embeddings=feats[2],
            image_positional_embeddings=pe.expand(b, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            high_resolution_features=feats[:2],
        )
        return low.flatten(0, 1), iou.flatten(0, 1)

    def upsample(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, K, 256, 256) logits -> (B, K, H, W) logits at the input image size."""
        return F.interpolate(low_res, self.image_shape, mode="bilinear", align_corners=False)

    def predict_arrays(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``SAM2ImagePredictor.predict`` on the current image.

        Args:
            point_coords: (N, 2) ``(x, y)`` pixels, or None; point_labels: (N,) 1/0.
            box: (4,) XYXY pixels for one object, or (B, 4) for B objects, or None.
            mask_input: (1, 256, 256) low-resolution logits (e.g. from a previous call).
            multimask_output: three candidates, else one.

        Returns:
            ``(masks, scores, low_res)``: bool (K, H, W), float32 (K,), float32 (K, 256, 256)
            for one object; with B boxes each gains a leading B axis.
        """
        with self.lock, torch.inference_mode():
            coords = labels = None
            if point_coords is not None:
                coords = self.to_input_frame(point_coords)
                labels = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)
                if coords.ndim == 2:
                    coords, labels = coords[None], labels[None]
            if box is not None:
                corners = self.to_input_frame(np.asarray(box, np.float32).reshape(-1, 2, 2))
                corner_labels = torch.tensor([_BOX_LABELS], dtype=torch.int, device=self.device)
                corner_labels = corner_labels.expand(len(corners), -1)
                if coords is None:
                    coords, labels = corners, corner_labels
                else:
                    coords = torch.cat([corners, coords], 1)
                    labels = torch.cat([corner_labels, labels], 1)
            masks_in = None
            if mask_input is not None:
                masks_in = torch.as_tensor(mask_input, dtype=torch.float32, device=self.device)
                masks_in = masks_in[None] if masks_in.ndim == 3 else masks_in
            low, iou = self.decode(coords, labels, masks_in, multimask_output)
            masks = self.upsample(low) > MASK_THRESHOLD
            low = low.clamp(-32.0, 32.0)
            out = (masks.cpu().numpy(), iou.float().cpu().numpy(), low.float().cpu().numpy())
            return tuple(a[0] for a in out) if len(low) == 1 else out

    def predict(self, prompt: Prompt) -> Masks:
        """Masks for a validated :class:`~ovseg.proposals.prompts.Prompt` on the current image.

        The same policy as SAM 1's :class:`~ovseg.proposals.sam.Proposer`: one object per box
        (points and a rough mask join a single box); a single point gives SAM's three
        candidates and keeps the one with the highest predicted IoU; other prompts ask for one
        mask.
        """
        with self.lock:
            if self._key is None:
                raise RuntimeError("no image set: call set_image(image) first")
            return predict_prompt(prompt, self.predict_arrays, self.low_res_side)

    def _mask_logits(self, mask: np.ndarray) -> np.ndarray:
        """bool (H, W) -> SAM 2's mask prompt (1, 256, 256): the whole image resized, +-8."""
        return square_mask_prompt(mask, self.low_res_side)
