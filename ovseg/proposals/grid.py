"""Automatic proposals: SAM decoded over a grid of point prompts, filtered at low resolution.

Same model, same grid and the same quality filters as ``SamAutomaticMaskGenerator`` (one crop
layer), reorganised for speed:

- the grid is decoded in large batches straight from the cached image embedding, by
  :func:`ovseg.proposals.decoder.decode_points` (SAM's decoder with the per-image work shared across
  prompts, and no upscaling for prompts the predicted-IoU filter rejects);
- predicted-IoU and stability filters and box NMS run on SAM's low-resolution logits
  (256x256 for the official models); only the survivors are upsampled to the input size, with
  SAM's own ``postprocess_masks``, so a surviving mask is pixel-identical to the plain
  generator's. Stability and NMS boxes measured at low resolution can differ from the
  full-resolution ones near the thresholds: that is the documented tolerance of this path;
- ``adaptive=True`` decodes a coarse grid first (every other point of the grid in each
  direction, a quarter of the points), then only the other grid points that no kept mask
  covers. It never decodes more points than the full grid, and saves up to three quarters of
  the decoder calls when the coarse masks cover the image, at the risk of missing small parts
  inside covered regions.

:func:`fused_attention` switches SAM's image-encoder attention to PyTorch's fused
``scaled_dot_product_attention`` (the decomposed relative-position bias passed as ``attn_mask``):
the same arithmetic up to float rounding, faster and lighter than the explicit softmax.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as _EncoderAttention
from segment_anything.modeling.image_encoder import get_rel_pos
from segment_anything.utils.amg import build_point_grid
from torchvision.ops import batched_nms

from ovseg.proposals.decoder import decode_points
from ovseg.proposals.options import GridOptions
from ovseg.proposals.sam import Proposer
from ovseg.structures import Masks


@dataclass
class _LowRes:
    logits: torch.Tensor  # (M, S, S) float, SAM's padded low-resolution frame
    scores: torch.Tensor  # (M,) predicted IoU


def automatic_masks(proposer: Proposer, options: GridOptions = GridOptions()) -> Masks:
    """Grid proposals for the image set on ``proposer``; masks sorted by predicted IoU.

    A SAM 2 proposer (:class:`~ovseg.proposals.sam2.Sam2Proposer`) goes to
    :func:`~ovseg.proposals.sam2_grid.automatic_masks_sam2` (Meta's SAM 2 generator's semantics).
    """
    from ovseg.proposals.sam2 import Sam2Proposer

    if isinstance(proposer, Sam2Proposer):
        from ovseg.proposals.sam2_grid import automatic_masks_sam2

        return automatic_masks_sam2(proposer, options)
    with proposer.lock, torch.inference_mode():
        h, w = proposer.image_shape
        if options.adaptive and options.points_per_side >= 4:
            n = options.points_per_side
            fine = _grid(n, h, w)
            first = np.zeros((n, n), bool)
            first[::2, ::2] = True  # the coarse pass: every other fine point in each direction
            first = first.reshape(-1)
            coarse = _decode(proposer, fine[first], options)
            extra = _decode(proposer, fine[~first & ~_covered(proposer, coarse, fine)], options)
            low = _LowRes(
                torch.cat([coarse.logits, extra.logits]), torch.cat([coarse.scores, extra.scores])
            )
        else:
            low = _decode(proposer, _grid(options.points_per_side, h, w), options)
        low = _nms(proposer, low, options.box_nms_thresh)
        order = torch.argsort(low.scores, descending=True)
        if options.max_masks is not None:
            order = order[: options.max_masks]
        return _upsample(proposer, _LowRes(low.logits[order], low.scores[order]))


def _grid(n: int, h: int, w: int) -> np.ndarray:
    return build_point_grid(n) * np.array([[w, h]], dtype=np.float64)


def _decode(proposer: Proposer, points: np.ndarray, o: GridOptions) -> _LowRes:
    p, model = proposer.predictor, proposer.model
    side = 4 * model.prompt_encoder.image_embedding_size[0]
    logits, scores = [], []
    for start in range(0, len(points), o.points_per_batch):
        batch = p.transform.apply_coords(
            points[start : start + o.points_per_batch], p.original_size
        )
        # float64 like SamAutomaticMaskGenerator: the prompt encoder casts after normalising.
        coords = torch.as_tensor(batch, device=p.device)[:, None]
        low, iou, _ = decode_points(model, p.features, coords, o.pred_iou_thresh)
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        if o.pred_iou_thresh > 0:
            keep = iou > o.pred_iou_thresh
            low, iou = low[keep], iou[keep]
        if o.stability_score_thresh > 0 and len(low):
            stab = _stability(_valid(low, p, side), model.mask_threshold, o.stability_score_offset)
            keep = stab >= o.stability_score_thresh
            low, iou = low[keep], iou[keep]
        logits.append(low)
        scores.append(iou)
    empty = torch.zeros((0, side, side), device=p.device)
    return _LowRes(
        torch.cat(logits) if logits else empty,
        torch.cat(scores) if scores else torch.zeros(0, device=p.device),
    )


def _valid(low: torch.Tensor, p, side: int) -> torch.Tensor:
    """Crop the padded low-resolution frame to the part that holds the image."""
    img = p.model.image_encoder.img_size
    lh = -(-p.input_size[0] * side // img)
    lw = -(-p.input_size[1] * side // img)
    return low[:, :lh, :lw]


def _stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int32)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return inter / union.clamp(min=1)


def _boxes(proposer: Proposer, logits: torch.Tensor) -> torch.Tensor:
    """Low-res logits -> XYXY boxes in input-image pixels (x1, y1 exclusive)."""
    p = proposer.predictor
    side = logits.shape[-1]
    fg = _valid(logits, p, side) > proposer.model.mask_threshold
    rows, cols = fg.any(-1), fg.any(-2)
    idx_r = torch.arange(rows.shape[-1], device=fg.device)
    idx_c = torch.arange(cols.shape[-1], device=fg.device)
    big = 1 << 20
    x0 = torch.where(cols, idx_c, big).amin(-1)
    x1 = torch.where(cols, idx_c, -1).amax(-1) + 1
    y0 = torch.where(rows, idx_r, big).amin(-1)
    y1 = torch.where(rows, idx_r, -1).amax(-1) + 1
    scale = max(p.original_size) / side
    boxes = torch.stack([x0, y0, x1, y1], -1).float() * scale
    return torch.where(fg.flatten(1).any(-1, keepdim=True), boxes, torch.zeros_like(boxes))


def _nms(proposer: Proposer, low: _LowRes, thresh: float) -> _LowRes:
    if len(low.scores) == 0 or thresh >= 1.0:
        return low
    boxes = _boxes(proposer, low.logits)
    keep = batched_nms(
        boxes,
        low.scores.float(),
        torch.zeros_like(low.scores, dtype=torch.long),
        iou_threshold=thresh,
    )
    return _LowRes(low.logits[keep], low.scores[keep])


def _covered(proposer: Proposer, low: _LowRes, points: np.ndarray) -> np.ndarray:
    """bool (P,): whether each (x, y) point falls inside any kept low-resolution mask."""
    p = proposer.predictor
    if len(low.scores) == 0:
        return np.zeros(len(points), bool)
    side = low.logits.shape[-1]
    union = (low.logits > proposer.model.mask_threshold).any(0).cpu().numpy()
    scale = side / max(p.original_size)
    xs = np.clip((points[:, 0] * scale).astype(int), 0, side - 1)
    ys = np.clip((points[:, 1] * scale).astype(int), 0, side - 1)
    return union[ys, xs]


def _upsample(proposer: Proposer, low: _LowRes, chunk: int = 32) -> Masks:
    p, model = proposer.predictor, proposer.model
    h, w = p.original_size
    out = np.zeros((len(low.scores), h, w), bool)
    for s in range(0, len(low.scores), chunk):
        up = model.postprocess_masks(low.logits[s : s + chunk, None], p.input_size, p.original_size)
        out[s : s + chunk] = (up[:, 0] > model.mask_threshold).cpu().numpy()
    return Masks.from_masks(out, low.scores.float().cpu().numpy())


def _sdpa_forward(self: _EncoderAttention, x: torch.Tensor) -> torch.Tensor:
    """``segment_anything`` encoder attention on (B, H, W, C) tokens, through fused SDPA."""
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, H*W, C/heads)
    bias = None
    if self.use_rel_pos:
        rq = q.reshape(b, self.num_heads, h, w, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", rq, get_rel_pos(h, h, self.rel_pos_h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", rq, get_rel_pos(w, w, self.rel_pos_w))
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, self.num_heads, h * w, h * w)
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
    out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def fused_attention(sam, enabled: bool = True) -> int:
    """Switch the attention layers of SAM's image encoder to fused SDPA (``enabled=True``) or
    back to ``segment_anything``'s own forward (``enabled=False``).

    The patch is per instance (other SAM models are untouched) and exact up to float rounding
    (about 1e-6 relative on the image embedding). Returns the number of layers switched (0 for
    a model without SAM 1's encoder, e.g. SAM 2, whose ``transformers`` attention is fused).
    """
    if not hasattr(sam, "image_encoder"):
        return 0
    layers = [m for m in sam.image_encoder.modules() if isinstance(m, _EncoderAttention)]
    for layer in layers:
        if enabled:
            layer.forward = types.MethodType(_sdpa_forward, layer)
        else:
            layer.__dict__.pop("forward", None)
    return len(layers)


def uses_fused_attention(sam) -> bool:
    """Whether :func:`fused_attention` is on for ``sam``'s image encoder."""
    if not hasattr(sam, "image_encoder"):
        return False
    return any(
        "forward" in m.__dict__
        for m in sam.image_encoder.modules()
        if isinstance(m, _EncoderAttention)
    )
