"""SAM 2's mask decoder reorganised for many point prompts on one image.

``transformers``' ``Sam2MaskDecoder`` (like Meta's ``MaskDecoder``) copies the image embedding,
its positional encoding and both high-resolution maps once per prompt and projects the image
tokens per prompt in every attention. For the automatic grid (hundreds of single-point prompts)
this module computes the same numbers with the shared work done once:

- :func:`prepare` computes, once per image (or crop), everything that does not depend on the
  prompts: the image tokens with the "no mask" embedding, the image-wide positional encoding, and
  the image-side projections of the first two-way block (whose image tokens are the same for
  every prompt);
- in the attentions whose image tokens differ per prompt, the projections are moved to the
  prompt side, which has only a few tokens (8 for a point: six output tokens, the point, the
  padding point). A head's scores ``q (x W_k + b_k)^T`` are ``(q W_k^T) x^T`` up to a constant
  per query that the softmax removes, its values ``A (x W_v + b_v)`` are ``(A x) W_v + b_v``,
  and the image-to-token output ``sum_h A_h V_h W_o,h`` is ``A [V_h W_o,h]_h``: the products
  with the 4,096 image tokens run over ``heads x tokens`` (64) columns instead of the attention
  width (128) and no per-prompt projection of the image tokens is stored;
- the IoU head reads only the IoU token, so the predicted IoUs come before the output upscaling,
  which runs only for prompts with at least one candidate above ``iou_threshold`` (the others
  would be dropped by the generator's predicted-IoU filter).

The arithmetic is the decoder's own, reassociated; results equal ``Sam2MaskDecoder`` up to float
rounding (about 1e-6 relative in float32). The modules' weights are read as they are, so a model
in bfloat16 or float16 runs in that dtype (softmax in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageContext:
    """The prompt-independent part of SAM 2's mask decoder for one image embedding.

    Attributes:
        embed: image embedding (1, C, h, w) (no "no mask" embedding added).
        src: image tokens with the "no mask" embedding, (1, N, C), N = h * w.
        pos: image-wide positional encoding, (1, N, C).
        first: the first block's image-side projections for ``src`` (keys and values of
            token-to-image, queries of image-to-token), each (heads, N, head_dim).
        upscale: the output upscaling as two per-pixel products (its transposed convolutions
            have kernel 2 and stride 2): the weights (C, 4 C/4) and (C/4, 4 C/8), and the
            high-resolution maps with the convolutions' biases added, (1, 4N, C/4) and
            (1, 16N, C/8), pixels in the nested order of :func:`_nested`.
    """

    embed: Tensor
    src: Tensor
    pos: Tensor
    first: tuple[Tensor, Tensor, Tensor]
    upscale: tuple[Tensor, Tensor, Tensor, Tensor]


def _heads(x: Tensor, n: int) -> Tensor:
    """(B, T, n * d) -> (B, n, T, d)."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _image_side(attn, x: Tensor, name: str) -> Tensor:
    """Projection ``name`` of shared image tokens (1, N, C) -> (heads, N, head_dim)."""
    return _heads(getattr(attn, name)(x), attn.num_attention_heads)[0]


def prepare(model, features: list[Tensor] | tuple[Tensor, ...]) -> ImageContext:
    """The shared part of the decoder for ``features`` = ``[s0, s1, embed]`` of one image (as
    ``Sam2Model.get_image_embeddings`` returns them, batch 1)."""
    s0, s1, embed = features
    prompt = model.prompt_encoder
    dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)
    src = (embed + dense).flatten(2).transpose(1, 2)
    pos = model.get_image_wide_positional_embeddings().to(embed.dtype).flatten(2).transpose(1, 2)
    block = model.mask_decoder.transformer.layers[0]
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    src_pos = src + pos
    first = (
        _image_side(t2i, src_pos, "k_proj"),
        _image_side(t2i, src, "v_proj"),
        _image_side(i2t, src_pos, "q_proj"),
    )
    dec = model.mask_decoder
    conv1, conv2 = dec.upscale_conv1, dec.upscale_conv2
    upscale = (
        conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1),
        _nested(s1, 1) + conv1.bias,
        conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1),
        _nested(s0, 2) + conv2.bias,
    )
    return ImageContext(embed, src, pos, first, upscale)


def _nested(x: Tensor, levels: int) -> Tensor:
    """(B, C, h 2^L, w 2^L) -> (B, h w 4^L, C): pixel (y, x) with ``y = 2^L i + ... + a_L``
    (bits ``a_1 .. a_L`` of each upscaling) placed in the order ``(i, j, a_1, b_1, ..., a_L,
    b_L)``, the order in which the kernel-2 stride-2 transposed convolutions write them."""
    b, c, hh, ww = x.shape
    f = 2**levels
    x = x.view(b, c, hh // f, *[2] * levels, ww // f, *[2] * levels)
    rows, cols = range(3, 3 + levels), range(4 + levels, 4 + 2 * levels)
    bits = [a for pair in zip(rows, cols, strict=True) for a in pair]
    return x.permute(0, 2, 3 + levels, *bits, 1).reshape(b, -1, c)


def _unnest(x: Tensor, h: int, w: int, levels: int) -> Tensor:
    """Inverse of :func:`_nested` for (B, M, h w 4^L) -> (B, M, h 2^L, w 2^L)."""
    b, m, _ = x.shape
    x = x.view(b, m, h, w, *[2] * (2 * levels))
    bits = list(range(4, 4 + 2 * levels))
    order = [0, 1, 2, *bits[0::2], 3, *bits[1::2]]
    f = 2**levels
    return x.permute(*order).reshape(b, m, h * f, w * f)


def _softmax(x: Tensor, dim: int = -1) -> Tensor:
    return x.softmax(dim, dtype=torch.float32).to(x.dtype)


def _matmul_shared(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for a (B, M, K) and b (1 or B, K, L), as one matrix product when b is shared."""
    if b.shape[0] == 1 and a.shape[0] > 1:
        return (a.reshape(-1, a.shape[-1]) @ b[0]).reshape(*a.shape[:2], b.shape[-1])
    return a @ b


def _token_to_image(attn, tokens: Tensor, x: Tensor, xp: Tensor) -> Tensor:
    """Token-to-image attention: queries ``tokens`` (B, T, C) (positional part added), keys
    ``xp`` and values ``x`` (1 or B, N, C). Returns the output projection (B, T, C)."""
    n, d = attn.num_attention_heads, attn.head_dim
    b, t, c = tokens.shape
    q = _heads(attn.q_proj(tokens), n)  # (B, n, T, d)
    qk = (q @ attn.k_proj.weight.view(n, d, c)).reshape(b, n * t, c)
    weights = _softmax(_matmul_shared(qk, xp.transpose(1, 2)) * attn.scaling)  # (B, nT, N)
    ax = _matmul_shared(weights, x).view(b, n, t, c)
    out = ax @ attn.v_proj.weight.view(n, d, c).transpose(1, 2) + attn.v_proj.bias.view(n, 1, d)
    return attn.o_proj(out.transpose(1, 2).reshape(b, t, n * d))


def _first_token_to_image(attn, tokens: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Token-to-image attention on the shared projected keys and values (heads, N, d)."""
    n, d = attn.num_attention_heads, attn.head_dim
    b, t, _ = tokens.shape
    q = attn.q_proj(tokens).reshape(b * t, n, d).transpose(0, 1)  # (n, B*T, d)
    weights = _softmax(q @ k.transpose(1, 2) * attn.scaling)  # (n, B*T, N)
    out = (weights @ v).transpose(0, 1).reshape(b, t, n * d)
    return attn.o_proj(out)


def _image_to_token(attn, xp: Tensor, q_shared, tokens: Tensor, values: Tensor, residual: Tensor):
    """Image-to-token attention: queries from image tokens ``xp`` (1 or B, N, C), or their
    projection ``q_shared`` (heads, N, d) when shared; keys ``tokens`` (B, T, C) (positional
    part added), values ``values`` (B, T, C). Returns ``residual`` (1 or B, N, C) plus the
    output projection, (B, N, C), accumulated in one pass.

    The scores are laid out (B, heads, T, N) so that the softmax over the T tokens runs along
    a strided axis (a softmax over rows of 8 is several times slower on a CPU)."""
    n, d = attn.num_attention_heads, attn.head_dim
    b, t, c = tokens.shape
    k = _heads(attn.k_proj(tokens), n)  # (B, n, T, d)
    if q_shared is not None:
        kt = k.transpose(0, 1).reshape(n, b * t, d)
        scores = (kt @ q_shared.transpose(1, 2)).view(n, b, t, -1).transpose(0, 1)
    else:
        m = (k @ attn.q_proj.weight.view(n, d, c)).view(b, n * t, c)
        bias = (k @ attn.q_proj.bias.view(n, d, 1)).view(b, n * t, 1)
        scores = _baddbmm_shared(bias, m, xp.transpose(1, 2)).view(b, n, t, -1)
    weights = _softmax(scores * attn.scaling, dim=2).reshape(b, n * t, -1)  # (B, nT, N)
    v = _heads(attn.v_proj(values), n)  # (B, n, T, d)
    vo = (v @ attn.o_proj.weight.view(c, n, d).permute(1, 2, 0)).view(b, n * t, c)
    out = (residual + attn.o_proj.bias).expand(b, -1, -1)
    if out.dtype != vo.dtype:  # autocast: the product runs in its dtype
        return torch.baddbmm(out, weights.transpose(1, 2), vo)
    return out.contiguous().baddbmm_(weights.transpose(1, 2), vo)


def _baddbmm_shared(bias: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``bias + a @ b`` for a (B, M, K), b (1 or B, K, L) and bias (B, M, 1)."""
    if b.shape[0] == 1 and a.shape[0] > 1:
        return _matmul_shared(a, b) + bias
    return torch.baddbmm(bias, a, b)


def _self_attention(attn, q: Tensor, v: Tensor) -> Tensor:
    n = attn.num_attention_heads
    b, t, _ = q.shape
    out = F.scaled_dot_product_attention(
        _heads(attn.q_proj(q), n), _heads(attn.k_proj(q), n), _heads(attn.v_proj(v), n)
    )
    return attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def _block(block, queries: Tensor, keys: Tensor, tokens: Tensor, pos: Tensor, first=None):
    """A ``Sam2TwoWayAttentionBlock``; ``first`` holds the shared image-side projections when
    ``keys`` is the shared (1, N, C) image."""
    if block.skip_first_layer_pe:
        queries = _self_attention(block.self_attn, queries, queries)
    else:
        queries = queries + _self_attention(block.self_attn, queries + tokens, queries)
    queries = block.layer_norm1(queries)

    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    xp = keys + pos
    if first is not None:
        out = _first_token_to_image(t2i, queries + tokens, first[0], first[1])
    else:
        out = _token_to_image(t2i, queries + tokens, keys, xp)
    queries = block.layer_norm2(queries + out)
    queries = block.layer_norm3(queries + block.mlp(queries))

    q_shared = first[2] if first is not None else None
    keys = _image_to_token(i2t, xp, q_shared, queries + tokens, queries, keys)
    return queries, block.layer_norm4(keys)


def decode_points(
    model,
    image: ImageContext,
    coords: Tensor,
    labels: Tensor,
    mask_input: Tensor | None = None,
    multimask_output: bool = True,
    iou_threshold: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """SAM 2's mask decoder for B prompts of points on one image.

    Args:
        model: a ``transformers`` ``Sam2Model``.
        image: :func:`prepare` of the image's features.
        coords: float (B, P, 2) points in the model's input frame (``x, y`` pixels of the
            square input); labels: int (B, P) (1 positive, 0 negative).
        mask_input: optional (B, 1, 4h, 4w) mask logits, one per prompt.
        multimask_output: SAM 2's three candidates per prompt, else one (chosen as
            ``Sam2MaskDecoder`` does, by the stability of the single-mask output).
        iou_threshold: prompts none of whose candidates have predicted IoU above this skip the
            upscaling (their masks are not returned).

    Returns:
        ``(low_res, iou, kept)``: logits (K, M, 4h, 4w) and predicted IoU (K, M) of the K kept
        prompts (M = 3 or 1), and their indices (K,) into the batch.
    """
    prompt, dec = model.prompt_encoder, model.mask_decoder
    dtype = image.src.dtype
    sparse = prompt._embed_points(coords[:, None], labels[:, None], True)[:, 0].to(dtype)
    b = sparse.shape[0]
    out_tokens = torch.cat(
        [dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight]
    )
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)

    first = image.first
    keys = image.src
    if mask_input is not None:
        dense = prompt.mask_embed(mask_input.to(dtype))
        keys = (image.embed + dense).flatten(2).transpose(1, 2)
        first = None
    tr = dec.transformer
    queries = tokens
    for i, layer in enumerate(tr.layers):
        queries, keys = _block(layer, queries, keys, tokens, image.pos, first if i == 0 else None)
        first = None
    final = tr.final_attn_token_to_image
    out = _token_to_image(final, queries + tokens, keys, keys + image.pos)
    queries = tr.layer_norm_final_attn(queries + out)

    iou = dec.iou_prediction_head(queries[:, 1])  # (B, 1 + 3)
    dynamic = not multimask_output and dec.dynamic_multimask_via_stability and not dec.training
    candidates = slice(1, None) if multimask_output else slice(None) if dynamic else slice(0, 1)
    kept = torch.arange(b, device=iou.device)
    if iou_threshold > 0:
        kept = torch.nonzero((iou[:, candidates] > iou_threshold).any(1)).flatten()
    first_mask = 1 if multimask_output else 0
    low = _masks(dec, keys[kept], queries[kept], image, first_mask)
    iou = iou[kept]
    if multimask_output:
        return low, iou[:, 1:], kept
    if dynamic:
        low, iou = dec._dynamic_multimask_via_stability(low[:, None], iou[:, None])
        return low[:, 0], iou[:, 0], kept
    return low[:, :1], iou[:, :1], kept


def _masks(dec, keys: Tensor, queries: Tensor, image: ImageContext, first_mask: int) -> Tensor:
    """Upscaled mask logits (K, 4 - first_mask, 4h, 4w) of the mask tokens from ``first_mask``,
    computed in the nested pixel order (no transposes of the upscaled maps)."""
    k = len(queries)
    _, c, h, w = image.embed.shape
    if k == 0:
        return queries.new_zeros((0, dec.num_mask_tokens - first_mask, 4 * h, 4 * w))
    w1, s1, w2, s0 = image.upscale
    norm = dec.upscale_layer_norm
    up = (keys @ w1).view(k, s1.shape[1], -1) + s1
    up = dec.activation(F.layer_norm(up, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
    up = dec.activation((up @ w2).view(k, s0.shape[1], -1) + s0)  # (K, 16N, C/8)
    mask_tokens = queries[:, 2 : 2 + dec.num_mask_tokens]
    mlps = dec.output_hypernetworks_mlps
    hyper = torch.stack(
        [mlps[i](mask_tokens[:, i]) for i in range(first_mask, dec.num_mask_tokens)], dim=1
    )
    return _unnest(hyper @ up.transpose(1, 2), h, w, 2)
