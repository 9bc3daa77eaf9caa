"""SAM's mask decoder reorganised for many point prompts on one image.

``segment_anything``'s ``MaskDecoder`` copies the image embedding once per prompt and runs every
projection of it per prompt. For the automatic grid (hundreds of single-point prompts, no mask
prompt) two parts of that work are the same for every prompt and are done once here:

- in the first two-way attention block the image tokens have not been updated yet, so the
  image-side projections of both cross-attentions (keys and values of token-to-image, queries
  of image-to-token) are computed once and broadcast;
- in the later blocks and the final attention, the projections of the image tokens that share
  an input are one matrix product, with the positional part (``pos W^T``, the same for every
  prompt) computed once and added inside the product; attention runs through PyTorch's fused
  ``scaled_dot_product_attention``;
- the mask quality head reads only the IoU token, so the IoU predictions come before the
  output upscaling, and the upscaling and mask hypernetworks run only for prompts with at least
  one candidate above ``iou_threshold``; the masks of the others would be dropped by that filter.

The arithmetic is SAM's own (same modules, same order), so results equal ``MaskDecoder`` up to
float rounding from different matrix-multiply batch shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _heads(x: Tensor, n: int) -> Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(attn, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SAM's ``Attention`` on already projected q, k, v (batch dims broadcast), fused softmax."""
    n = attn.num_heads
    q, k, v = _heads(q, n), _heads(k, n), _heads(v, n)
    b = max(q.shape[0], k.shape[0])
    q, k, v = (x.expand(b, -1, -1, -1) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    b, _, t, c = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


def _image_projections(keys: Tensor, pos: Tensor, layers: list, with_pe: list[bool]):
    """One matrix product for several projections of the image tokens: ``layer(keys + pos)``
    where ``with_pe`` else ``layer(keys)``, as ``keys W^T + b (+ pos W^T)``."""
    weight = torch.cat([m.weight for m in layers])
    bias = torch.cat([m.bias for m in layers])
    pe_weight = torch.cat(
        [
            m.weight if pe else torch.zeros_like(m.weight)
            for m, pe in zip(layers, with_pe, strict=True)
        ]
    )
    shared = F.linear(pos, pe_weight, bias)  # (1, N, sum of outputs)
    b = keys.shape[0]
    out = torch.baddbmm(shared.expand(b, -1, -1), keys, weight.t().expand(b, -1, -1))
    return out.split([m.out_features for m in layers], dim=-1)


def _block(block, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor):
    """A ``TwoWayAttentionBlock`` (not the first) with its image-side projections fused."""
    q = queries + query_pe
    queries = block.norm1(queries + block.self_attn(q=q, k=q, v=queries))
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    k_t2i, v_t2i, q_i2t = _image_projections(
        keys, key_pe, [t2i.k_proj, t2i.v_proj, i2t.q_proj], [True, False, True]
    )
    q = t2i.q_proj(queries + query_pe)
    queries = block.norm2(queries + _attend(t2i, q, k_t2i, v_t2i))
    queries = block.norm3(queries + block.mlp(queries))
    tokens = queries + query_pe
    out = _attend(i2t, q_i2t, i2t.k_proj(tokens), i2t.v_proj(queries))
    return queries, block.norm4(keys + out)


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
        queries, keys = _block(layer, queries, keys, tokens, pos)
    final = tr.final_attn_token_to_image
    k, v = _image_projections(keys, pos, [final.k_proj, final.v_proj], [True, False])
    queries = tr.norm_final_attn(queries + _attend(final, final.q_proj(queries + tokens), k, v))

    iou = dec.iou_prediction_head(queries[:, 0])[:, 1:]
    kept = (
        torch.nonzero((iou > iou_threshold).any(1)).flatten()
        if iou_threshold > 0
        else torch.arange(b, device=iou.device)
    )
    if len(kept) == 0:
        return iou.new_zeros((0, iou.shape[1], 4 * h, 4 * w)), iou[kept], kept
    keys, mask_tokens = keys[kept], queries[kept, 1 : 1 + dec.num_mask_tokens]
    upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(len(kept), c, h, w))
    hyper = torch.stack(
        [mlp(mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )[:, 1:]
    k, uc, uh, uw = upscaled.shape
    low = (hyper @ upscaled.reshape(k, uc, uh * uw)).reshape(k, -1, uh, uw)
    return low, iou[kept], kept
