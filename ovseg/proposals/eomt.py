"""Class-agnostic regions from EoMT (Encoder-only Mask Transformer, a COCO-panoptic model) as
CorrCLIP's reference code makes them (its ``eomt`` mask generator).

The network is ``transformers``' ``EomtForUniversalSegmentation``; the steps around it follow
the reference (``CorrCLIPv2/mask_generators/factory.py`` ``EoMTGenerator`` and EoMT's
``training/lightning_module.py``, the same in ``CorrCLIPv1/``), not ``EomtImageProcessor``,
whose sizes truncate where the reference rounds and whose overlap test is ``>`` where the
reference's is ``>=``:

1. The RGB image is resized with PIL bilinear (uint8) by ``min(S / H, S / W)`` to
   ``(round(H f), round(W f))``, ``S`` the model's input side (640), zero-padded at the bottom
   and right to ``S x S``, divided by 255 and normalised with ImageNet's mean and std.
2. One forward pass without masked attention (the reference builds EoMT with
   ``masked_attn_enabled=False``: :func:`prepare_eomt` sets ``attn_mask_probs`` to 0); the last
   layer's mask logits are resized bilinearly to ``S x S``, cropped to the resized image and
   resized bilinearly to ``(H, W)``.
3. Panoptic merge (``to_per_pixel_preds_panoptic``): a query is kept when its top class is not
   "no object" and that class's softmax probability is above 0.8; each pixel goes to the kept
   query of largest ``score * sigmoid(mask)``; in query order, a query's segment is its pixels
   with ``sigmoid >= 0.5``, dropped when empty or when fewer than 80% of its ``>= 0.5`` pixels
   won the argmax; queries of the same *stuff* class share one segment (COCO-panoptic classes
   80-132); pixels of no segment are unsegmented.

The result (:func:`eomt_regions`) is an int64 id map with CorrCLIP's convention: 0 =
unsegmented, segment ``i`` (0-based, in the order above) has id ``i + 1``, so the order of the
ids, which CorrCLIP's code reads (its smallest id is its unsegmented region), is the
reference's. Only the kept queries are resized to the image (the reference resizes all 200
and keeps the same ones): the same numbers, with memory for the kept masks only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ADE20K_PANOPTIC_STUFF",
    "COCO_PANOPTIC_STUFF",
    "MASK_THRESHOLD",
    "OVERLAP_THRESHOLD",
    "SCORE_THRESHOLD",
    "eomt_input",
    "eomt_regions",
    "is_eomt_model",
    "panoptic_segments",
    "prepare_eomt",
    "scaled_size",
    "stuff_classes",
]

SCORE_THRESHOLD = 0.8
"""A query is kept when its class probability is above this (the reference's ``mask_thresh``)."""
MASK_THRESHOLD = 0.5
"""A query's own mask: ``sigmoid(logit) >= 0.5``."""
OVERLAP_THRESHOLD = 0.8
"""A query's segment is dropped when the share of its own mask that won the argmax is below
this (the reference's ``overlap_thresh``)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

COCO_PANOPTIC_STUFF = tuple(range(80, 133))
"""Stuff classes of the 133 COCO-panoptic classes (EoMT's ``configs/.../coco/panoptic``)."""
ADE20K_PANOPTIC_STUFF = (
    0, 1, 2, 3, 4, 5, 6, 9, 11, 13, 16, 17, 21, 25, 26, 28, 29, 34, 40, 46, 48, 51, 52, 54, 59,
    60, 61, 63, 68, 77, 79, 84, 91, 94, 96, 99, 100, 101, 105, 106, 109, 113, 114, 117, 122, 128,
    131, 140, 141, 145,
)  # fmt: skip
"""Stuff classes of the 150 ADE20K-panoptic classes (EoMT's ``configs/.../ade20k/panoptic``)."""


def is_eomt_model(model: object) -> bool:
    """Whether ``model`` is a ``transformers`` ``EomtForUniversalSegmentation``."""
    return type(model).__name__ == "EomtForUniversalSegmentation"


def stuff_classes(model) -> tuple[int, ...]:
    """The stuff classes of an EoMT by its number of classes: COCO panoptic (133) or ADE20K
    panoptic (150); none for other models (each query its own segment)."""
    return {133: COCO_PANOPTIC_STUFF, 150: ADE20K_PANOPTIC_STUFF}.get(model.config.num_labels, ())


def prepare_eomt(model):
    """``model`` in eval mode without masked attention (``attn_mask_probs`` = 0), as the
    reference runs EoMT for inference; returned for chaining."""
    model.eval()
    with torch.no_grad():
        model.attn_mask_probs.zero_()
    return model


def _side(model) -> tuple[int, int]:
    size = model.config.image_size
    return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (size, size)


def scaled_size(shape: tuple[int, int], side: tuple[int, int]) -> tuple[int, int]:
    """The reference's resized ``(h, w)``: ``round(s * min(S_h / H, S_w / W))`` per side."""
    factor = min(side[0] / shape[0], side[1] / shape[1])
    return round(shape[0] * factor), round(shape[1] * factor)


def eomt_input(image: np.ndarray, side: tuple[int, int]) -> torch.Tensor:
    """The network input float32 ``(1, 3, S_h, S_w)`` of an RGB uint8 ``(H, W, 3)`` image:
    PIL bilinear resize to :func:`scaled_size`, zero padding at the bottom and right (on the
    uint8 pixels), ``/ 255``, ImageNet normalisation."""
    from PIL import Image

    h, w = scaled_size(image.shape[:2], side)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    padded = np.zeros((side[0], side[1], 3), np.uint8)
    padded[:h, :w] = resized[: side[0], : side[1]]
    x = torch.from_numpy(padded).permute(2, 0, 1)[None] / 255.0
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, -1, 1, 1)
    return (x - mean) / std


def panoptic_segments(
    masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, stuff: tuple[int, ...]
) -> torch.Tensor:
    """The panoptic merge of the kept queries: int64 ``(H, W)`` segment ids, -1 = none.

    Args:
        masks: float ``(N, H, W)`` mask probabilities (sigmoid) of the kept queries, in order.
        scores, classes: ``(N,)`` their class probability and class.
        stuff: classes whose queries share one segment.
    """
    segments = torch.full(masks.shape[-2:], -1, dtype=torch.long, device=masks.device)
    if masks.shape[0] == 0:
        return segments
    winner = (scores[:, None, None] * masks).argmax(0)
    stuff_ids: dict[int, int] = {}
    next_id = 0
    for k, class_id in enumerate(classes.tolist()):
        own = masks[k] >= MASK_THRESHOLD
        won = winner == k
        final = own & won
        own_area, won_area = int(own.sum()), int(won.sum())
        if own_area == 0 or won_area == 0 or not final.any():
            continue
        if won_area / own_area < OVERLAP_THRESHOLD:
            continue
        if class_id in stuff and class_id in stuff_ids:
            segments[final] = stuff_ids[class_id]
            continue
        if class_id in stuff:
            stuff_ids[class_id] = next_id
        segments[final] = next_id
        next_id += 1
    return segments


@torch.inference_mode()
def eomt_regions(model, image: np.ndarray, stuff: tuple[int, ...] | None = None) -> np.ndarray:
    """EoMT's regions of ``image`` as an int64 id map ``(H, W)``: 0 = unsegmented, segment
    ``i`` -> ``i + 1`` (see the module docstring).

    Args:
        model: a ``transformers`` ``EomtForUniversalSegmentation`` (run as it is: use
            :func:`prepare_eomt` for the reference's inference mode); float32 is computed on
            its device.
        image: RGB uint8 ``(H, W, 3)``.
        stuff: stuff classes; None: :func:`stuff_classes` of the model.

    Raises:
        TypeError: not an EoMT model. ValueError: not an RGB uint8 ``(H, W, 3)`` image.
    """
    if not is_eomt_model(model):
        raise TypeError(f"model must be a transformers EomtForUniversalSegmentation, got {model!r}")
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and min(image.shape[:2]) > 0):  # fmt: skip
        raise ValueError("image must be an RGB uint8 (H, W, 3) array")
    stuff = stuff_classes(model) if stuff is None else tuple(stuff)
    side = _side(model)
    h, w = image.shape[:2]
    param = next(model.parameters())
    out = model(pixel_values=eomt_input(image, side).to(param.device, param.dtype))
    class_logits = out.class_queries_logits[0].float()
    scores, classes = class_logits.softmax(dim=-1).max(-1)
    keep = classes.ne(class_logits.shape[-1] - 1) & (scores > SCORE_THRESHOLD)
    if not keep.any():
        return np.zeros((h, w), np.int64)
    logits = out.masks_queries_logits[0][keep][None].float()
    logits = F.interpolate(logits, side, mode="bilinear")
    rh, rw = scaled_size((h, w), side)
    logits = F.interpolate(logits[:, :, :rh, :rw], (h, w), mode="bilinear")[0]
    segments = panoptic_segments(logits.sigmoid(), scores[keep], classes[keep], stuff)
    return (segments + 1).cpu().numpy().astype(np.int64)
