"""SAM's mask decoder reorganised for many point prompts on one image.

``segment_anything``'s ``MaskDecoder`` copies the image embedding once per prompt and runs every
projection of it per prompt. For the automatic grid (hundreds of single-point prompts, no mask
prompt) two parts of that work are the same for every prompt and are done once here:

- in the first two-way attention block the image tokens have not been updated yet, so the
  image-side projections of both cross-attentions (keys and values of token-to-image, queries
  of image-to-token) are computed once and broadcast;
- the mask quality head reads only the IoU token, so the IoU predictions come before the
  output upscaling, and the upscaling and mask hypernetworks run only for prompts with at least
  one candidate above ``iou_threshold``; the masks of the others would be dropped by that filter.

The arithmetic is SAM's own (same modules, same order), so results equal ``MaskDecoder`` up to
float rounding from different matrix-multiply batch shapes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _heads(x: Tensor, n: int) -> Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(attn, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SAM's ``Attention`` on already projected q, k, v (batch dims broadcast)."""
    n = attn.num_heads
    q, k, v = _heads(q, n), _heads(k, n), _heads(v, n)
    weights = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v
    b, _, t, c = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


def _first_block(block, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor):
    """A ``TwoWayAttentionBlock`` whose ``keys`` (1, N, C) are shared by every prompt."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    queries = block.norm1(queries)

    t2i = block.cross_attn_token_to_image
    shared = keys + key_pe
    q = t2i.q_proj(queries + query_pe)
    queries = block.norm2(queries + _attend(t2i, q, t2i.k_proj(shared), t2i.v_proj(keys)))
    queries = block.norm3(queries + block.mlp(queries))

    i2t = block.cross_attn_image_to_token
    tokens = queries + query_pe
    out = _attend(i2t, i2t.q_proj(shared), i2t.k_proj(tokens), i2t.v_proj(queries))
    return queries, block.norm4(keys + out)


@torch.inference_mode()
def decode_points(model, features: Tensor, coords: Tensor, iou_threshold: float = 0.0):
    """Multimask decoding of single-point prompts on one image embedding.

    Args:
        model: a ``segment_anything.modeling.Sam``.
        features: the image embedding (1, C, h, w).
        coords: (B, P, 2) point prompts in SAM's input frame (all positive).
        iou_threshold: candidates with predicted IoU <= this are not needed: prompts none of
            whose three candidates pass skip the upscaling.

    Returns:
        ``(low_res, iou, kept)``: logits (K, 3, 4h, 4w) and predicted IoU (K, 3) of the K kept
        prompts, and their indices (K,) into the batch; the three candidates are SAM's multimask
        outputs (the same as ``MaskDecoder(..., multimask_output=True)``).
    """
    pe_module, dec = model.prompt_encoder, model.mask_decoder
    labels = torch.ones(coords.shape[:2], dtype=torch.int, device=coords.device)
    sparse, dense = pe_module(points=(coords, labels), boxes=None, masks=None)
    b = sparse.shape[0]
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)

    _, c, h, w = features.shape
    src = (features + dense[:1]).flatten(2).transpose(1, 2)  # (1, N, C): no mask prompt
    pos = pe_module.get_dense_pe().flatten(2).transpose(1, 2)
    tr = dec.transformer
    queries, keys = _first_block(tr.layers[0], tokens, src, tokens, pos)
    for layer in tr.layers[1:]:
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=pos)
    final = tr.final_attn_token_to_image
    queries = tr.norm_final_attn(queries + final(q=queries + tokens, k=keys + pos, v=keys))

    iou = dec.iou_prediction_head(queries[:, 0])[:, 1:]
    kept = torch.nonzero((iou > iou_threshold).any(1)).flatten() if iou_threshold > 0 \
        else torch.arange(b, device=iou.device)
    if len(kept) == 0:
        return iou.new_zeros((0, iou.shape[1], 4 * h, 4 * w)), iou[kept], kept
    keys, mask_tokens = keys[kept], queries[kept, 1 : 1 + dec.num_mask_tokens]
    upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(len(kept), c, h, w))
    hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in
                         enumerate(dec.output_hypernetworks_mlps)], dim=1)[:, 1:]
    k, uc, uh, uw = upscaled.shape
    low = (hyper @ upscaled.reshape(k, uc, uh * uw)).reshape(k, -1, uh, uw)
    return low, iou[kept], kept
