"""Dense patch features of an open_clip ViT with each method's modified last block.

All functions take ``visual``, an ``open_clip`` ``VisionTransformer`` (``model.visual`` of an
``open_clip.model.CLIP``: ``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer.resblocks`` of ``ResidualAttentionBlock`` with ``nn.MultiheadAttention``,
``ln_post``, ``proj``). Blocks may be batch-first or not (open_clip versions differ); tokens
returned here are always batch-first ``(B, T, C)`` with the class token first.

Last blocks (``q, k, v`` from the last block's ``in_proj`` on ``ln_1(x)``, per head,
``s = head_dim ** -0.5``, ``out`` its ``out_proj``):

- ``"sclip"``: ``A = softmax(q q^T s) + softmax(k k^T s)``; ``x = x + out(A v)``;
  ``x = x + mlp(ln_2(x))`` (residual and MLP kept).
- ``"clearclip"``: ``A = softmax(q q^T s)`` (``attention="vanilla"``: ``softmax(q k^T s)``, the
  shipped config); ``x = out(A v)`` (no residual, no MLP).
- ``"naclip"``: ``A = softmax(k k^T s + Omega)`` with the Gaussian neighbourhood
  ``Omega`` of :func:`naclip_attention_addition`; ``x = out(A v)`` (no residual, no MLP).

Then ``ln_post`` on every token, ``@ proj``, class token dropped.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ovseg.methods.geometry import interpolate_pos_embed

__all__ = [
    "METHODS",
    "dense_features",
    "embed_tokens",
    "last_block_qkv",
    "naclip_attention_addition",
    "project_tokens",
    "run_block",
    "tokens_before_last_block",
]

METHODS = ("sclip", "clearclip", "naclip")
_ATTENTIONS = {"sclip": ("csa",), "clearclip": ("clearclip", "vanilla"), "naclip": ("naclip",)}


def _check_visual(visual: nn.Module) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post", "proj")
    missing = [name for name in needed if not hasattr(visual, name)]
    if missing:
        raise TypeError(
            f"visual must be an open_clip ViT VisionTransformer (missing {', '.join(missing)})"
        )
    if getattr(visual, "proj", None) is None:
        raise TypeError("visual.proj is None: the dense methods need the output projection")
    if getattr(visual, "attn_pool", None) is not None:
        raise TypeError("visual has an attentional pooler; only plain ViT towers are supported")
    for blk in visual.transformer.resblocks:
        if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
            raise TypeError(
                "visual.transformer.resblocks must be ResidualAttentionBlocks with "
                "nn.MultiheadAttention (custom attention blocks are not supported)"
            )


def _patch_size(visual: nn.Module) -> tuple[int, int]:
    stride = visual.conv1.stride
    return (int(stride[0]), int(stride[1]))


def embed_tokens(
    visual: nn.Module,
    images: torch.Tensor,
    recompute_scale_factor: bool | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding, class token, interpolated position table and ``ln_pre``: the input of
    the first block, ``(B, 1 + gh * gw, C)`` batch-first, and the grid ``(gh, gw)``.
    Arguments as :func:`tokens_before_last_block`."""
    _check_visual(visual)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise TypeError("images must be a (B, 3, h, w) tensor")
    ph, pw = _patch_size(visual)
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    if gh < 1 or gw < 1:
        raise ValueError(f"window {tuple(images.shape[-2:])} is smaller than a patch ({ph}x{pw})")
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    pos = interpolate_pos_embed(
        visual.positional_embedding, (gh, gw), recompute_scale_factor=recompute_scale_factor
    )
    x = x + pos.to(x.dtype)
    return visual.ln_pre(x), (gh, gw)


def _sdpa_ready(block: nn.Module) -> bool:
    """Whether :func:`run_block` may compute ``block`` itself through SDPA: a plain open_clip
    ``ResidualAttentionBlock`` in eval mode (one packed ``in_proj``, no extra key/value
    biases, no cross-attention norm) that ``torch.compile`` has not wrapped."""
    attn = block.attn
    return (
        not block.training
        and getattr(block, "_compiled_call_impl", None) is None
        and type(block).__name__ == "ResidualAttentionBlock"
        and not hasattr(block, "ln_1_kv")
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and attn.bias_v is None
        and not attn.add_zero_attn
        and all(hasattr(block, n) for n in ("ln_1", "ln_2", "mlp"))
    )


def run_block(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None):
    """One open_clip block on batch-first tokens ``x`` (``attn_mask``: float ``(T, T)``,
    added to the attention logits), whatever the block's own layout.

    A plain block in eval mode is computed here as its ``forward`` defines it (``x + ls_1(
    attn(ln_1(x)))``, then ``x + ls_2(mlp(ln_2(x)))``) with the attention through PyTorch's
    ``scaled_dot_product_attention`` (fused on the CPU and the GPU, the ``T x T`` weights never
    written out): the same formula as ``nn.MultiheadAttention``, equal to float32 rounding
    (about 1e-6 relative). Any other block (training, compiled, custom) runs its own forward.
    """
    if _sdpa_ready(block):
        attn = block.attn
        b, t, c = x.shape
        heads = attn.num_heads
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        mask = None if attn_mask is None else attn_mask.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = attn.out_proj(y.transpose(1, 2).reshape(b, t, c))
        x = x + _layer_scale(block, "ls_1")(y)
        return x + _layer_scale(block, "ls_2")(block.mlp(block.ln_2(x)))
    if block.attn.batch_first:
        return block(x, attn_mask=attn_mask)
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


def tokens_before_last_block(
    visual: nn.Module,
    images: torch.Tensor,
    recompute_scale_factor: bool | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Embed ``images`` and run blocks ``0 .. L-2`` (the last block is left to the method).

    Args:
        visual: open_clip ViT (see module docstring).
        images: ``(B, 3, h, w)`` float32, normalised; ``h, w >= patch size`` (a remainder
            smaller than the patch is dropped by the stride-``p`` patch convolution).
        recompute_scale_factor: passed to :func:`interpolate_pos_embed` (NACLIP: ``False``).

    Returns:
        ``(tokens, (gh, gw))``: tokens ``(B, 1 + gh * gw, C)`` batch-first, class token first;
        ``gh = h // p``, ``gw = w // p``.
    """
    x, grid = embed_tokens(visual, images, recompute_scale_factor)
    for blk in visual.transformer.resblocks[:-1]:
        x = run_block(blk, x)
    return x, grid


def last_block_qkv(
    block: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k, v`` of ``block`` (a ResidualAttentionBlock) for batch-first tokens ``x``.

    Returns:
        three ``(B, heads, T, head_dim)`` tensors from ``in_proj`` applied to ``ln_1(x)``.
    """
    attn = block.attn
    b, t, c = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.chunk(3, dim=-1)

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(b, t, heads, c // heads).transpose(1, 2)

    return split(q), split(k), split(v)


@functools.lru_cache(maxsize=16)
def _cached_addition(gh: int, gw: int, std: float) -> torch.Tensor:
    return naclip_attention_addition(gh, gw, std)


def naclip_attention_addition(gh: int, gw: int, std: float = 5.0) -> torch.Tensor:
    """NACLIP's ``Omega``: ``(1 + gh*gw, 1 + gh*gw)`` float32, zero row and column for the
    class token, and for patches ``p = (i, j)``, ``p' = (k, l)`` (row-major)
    ``exp(-((i - k)^2 + (j - l)^2) / (2 std^2))``.

    The Gaussian values are taken from a ``(2gh-1) x (2gw-1)`` window built the way NACLIP
    builds it (``torch.linspace`` of the scaled offsets, squared, summed, ``exp(-.)``), so the
    float32 rounding matches its ``conv2d``-of-one-hot construction.
    """
    if std <= 0:
        raise ValueError(f"gaussian std must be > 0, got {std}")
    const = 1.0 / (std * math.sqrt(2))
    axes = []
    for dim in (2 * gh - 1, 2 * gw - 1):
        start = -(dim - 1) / 2.0
        axes.append(
            torch.linspace(start * const, (start + (dim - 1)) * const, dim, dtype=torch.float)
        )
    window = torch.exp(-(torch.stack(torch.meshgrid(*axes, indexing="ij")) ** 2).sum(0))
    ii = torch.arange(gh).repeat_interleave(gw)
    jj = torch.arange(gw).repeat(gh)
    # query (i, j) row, key (k, l) column: window[i - k + gh - 1, j - l + gw - 1]
    patch = window[(ii[:, None] - ii[None, :] + gh - 1), (jj[:, None] - jj[None, :] + gw - 1)]
    out = torch.zeros(gh * gw + 1, gh * gw + 1, dtype=torch.float)
    out[1:, 1:] = patch
    return out


def project_tokens(visual: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``ln_post`` on every token, ``@ proj``, drop the class token, lay out on the grid.

    Args:
        x: ``(B, 1 + gh*gw, C)`` batch-first tokens.

    Returns:
        ``(B, D, gh, gw)`` projected (not normalised) patch features.
    """
    feats = visual.ln_post(x) @ visual.proj
    feats = feats[:, 1:]
    b, n, d = feats.shape
    return feats.transpose(1, 2).reshape(b, d, grid[0], grid[1])


def _layer_scale(block: nn.Module, name: str) -> nn.Module:
    module = getattr(block, name, None)
    return module if module is not None else nn.Identity()


def _out(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``out_proj`` of per-head attention outputs ``(B, heads, T, head_dim)``."""
    b, heads, t, hd = y.shape
    return block.attn.out_proj(y.transpose(1, 2).reshape(b, t, heads * hd))


def dense_features(
    visual: nn.Module,
    images: torch.Tensor,
    method: str,
    attention: str | None = None,
    gaussian_std: float = 5.0,
) -> torch.Tensor:
    """Projected patch features of a batch of windows under ``method``'s last block.

    Args:
        visual: open_clip ViT.
        images: ``(B, 3, h, w)`` float32, CLIP-normalised; all windows of one call share a size.
        method: ``"sclip"``, ``"clearclip"`` or ``"naclip"``.
        attention: the last-block variant (``None``: the method's default; ClearCLIP also
            accepts ``"vanilla"``, its shipped ``model_type``).
        gaussian_std: NACLIP's ``sigma`` in patches.

    Returns:
        ``(B, D, gh, gw)`` float32 features (un-normalised; callers L2-normalise over ``D``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    attention = attention or _ATTENTIONS[method][0]
    if attention not in _ATTENTIONS[method]:
        raise ValueError(
            f"attention for {method} must be one of {_ATTENTIONS[method]}, got {attention!r}"
        )
    with torch.inference_mode():
        recompute = False if method == "naclip" else None
        x, grid = tokens_before_last_block(visual, images, recompute_scale_factor=recompute)
        block = visual.transformer.resblocks[-1]
        q, k, v = last_block_qkv(block, x)
        scale = q.shape[-1] ** -0.5
        # each softmax(a b^T s [+ mask]) v through the fused SDPA kernel: the same formula, the
        # T x T weights never written out
        if method == "sclip":
            # (softmax(q q^T s) + softmax(k k^T s)) v, as the sum of the two products
            y = F.scaled_dot_product_attention(q, q, v, scale=scale)
            y = y + F.scaled_dot_product_attention(k, k, v, scale=scale)
            # open_clip's layer scales (identity for CLIP weights) are applied as the block does
            x = x + _layer_scale(block, "ls_1")(_out(block, y))
            x = x + _layer_scale(block, "ls_2")(block.mlp(block.ln_2(x)))
        elif method == "clearclip":
            other = q if attention == "clearclip" else k
            x = _out(block, F.scaled_dot_product_attention(q, other, v, scale=scale))
        else:
            omega = _cached_addition(*grid, float(gaussian_std)).to(k.device, k.dtype)
            x = _out(block, F.scaled_dot_product_attention(k, k, v, attn_mask=omega, scale=scale))
        return project_tokens(visual, x, grid)
