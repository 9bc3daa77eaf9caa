"""CorrCLIP's window: the features of one sliding window from CLIP, DINO correlations and
regions (:mod:`ovseg.methods.corrclip` runs the windows over an image).

Per window (:func:`corrclip_window_features`):

1. DINO features ``f``: ``q + k`` of the last block (all heads), class token dropped,
   L2-normalised, on the DINO grid (the window re-normalised for DINO as in ProxyCLIP);
   ``S = f f^T``.
2. Regions: ids resized (nearest) to the DINO grid; the smallest id present is the
   unsegmented region; the others merged by DBSCAN on their mean features
   (:func:`~ovseg.methods.regions.merge_regions`).
3. ``A = softmax(4 S)`` with pairs outside the scope (:func:`~ovseg.methods.regions.scope_mask`)
   masked to ``-inf``; one map for all channels.
4. CLIP blocks ``0 .. L-2`` on the tokens with one extra class-token copy per region (merged
   regions resized to the CLIP grid by nearest), each copy attending only to the class token
   and its region's patches (the patch tokens never see the copies).
5. Main and spatial branches: the last block's value projection of ``ln_1`` of the tokens
   after block ``L-2`` (main) and of the mean of the outputs of blocks ``L-2-s .. L-3``
   (spatial; ``s`` = 5 for 12 blocks, 12 for 24, 28 for 32, else ``L - 4``), class token
   dropped, resized bilinearly to the DINO grid, ``A v``, ``out_proj``.
6. Semantic branch: the last block run normally on the sequence; each DINO cell takes its
   region's class-token copy (region map resized by nearest to the DINO grid).
7. ``ln_post`` on each, ``main + 1.0 * spatial + 0.5 * semantic``, ``@ proj``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.clip_blocks import embed_tokens, run_block
from ovseg.methods.dino import check_dino, dino_grid, dino_last_qkv
from ovseg.methods.proxy_attention import dino_input_from_clip
from ovseg.methods.regions import DBSCAN_EPS, merge_regions, resize_ids, scope_mask

__all__ = [
    "PAD_ID",
    "corrclip_dino_features",
    "corrclip_window_core",
    "corrclip_window_features",
    "spatial_blocks",
]

TAU = 4.0
SPATIAL_WEIGHT = 1.0
SEMANTIC_WEIGHT = 0.5
PAD_ID = 10000


def spatial_blocks(depth: int) -> range:
    """Indices of the blocks whose outputs the spatial branch averages (CorrCLIP's rule)."""
    count = {12: 5, 24: 12, 32: 28}.get(depth, depth - 4)
    blocks = range(max(depth - 2 - count, 0), depth - 2)
    return blocks if len(blocks) else range(depth - 2, depth - 1)


def corrclip_dino_features(
    dino: nn.Module,
    crops: Tensor,
    clip_mean: Sequence[float] = OPENAI_MEAN,
    clip_std: Sequence[float] = OPENAI_STD,
) -> tuple[Tensor, tuple[int, int]]:
    """Unit-norm ``q + k`` of DINO's last block: ``(B, gh * gw, C)`` float32 and the grid.

    ``crops``: ``(B, 3, h, w)`` CLIP-normalised windows (re-normalised for DINO first)."""
    check_dino(dino)
    x = dino_input_from_clip(crops, clip_mean, clip_std).to(dino.pos_embed.dtype)
    q, k, _ = dino_last_qkv(dino, x)
    feats = F.normalize((q + k)[:, 1:].float(), dim=-1)
    return feats, dino_grid(dino, x.shape[2], x.shape[3])


def _semantic_mask(token_region: Tensor, regions: int, dtype: torch.dtype) -> Tensor:
    """Additive attention mask over ``[copies; class token; patches]``: each copy sees the class
    token and its region's patches; the class token and patches see everything but copies."""
    n = token_region.numel()
    allowed = torch.zeros(regions + 1 + n, regions + 1 + n, dtype=torch.bool)
    allowed[regions:, regions:] = True
    allowed[:regions, regions] = True
    allowed[:regions, regions + 1 :] = token_region.view(1, -1).cpu() == torch.arange(regions).view(
        -1, 1
    )
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill(~allowed, float("-inf")).to(token_region.device)


def _one_window(clip_visual, dino, crop, ids, clip_mean, clip_std, eps) -> Tensor:
    feats, grid = corrclip_dino_features(dino, crop, clip_mean, clip_std)
    return corrclip_window_core(clip_visual, crop, feats[0], grid, ids, eps)


def corrclip_window_core(
    clip_visual: nn.Module,
    crop: Tensor,
    feats: Tensor,
    grid: tuple[int, int],
    ids: Tensor,
    eps: float | None = DBSCAN_EPS,
) -> Tensor:
    """CorrCLIP's last block on one window, given the correlation features (steps 2-7).

    Args:
        clip_visual: open_clip ViT image tower.
        crop: ``(1, 3, h, w)`` CLIP-normalised window.
        feats: ``(fh * fw, C)`` unit-norm features on the grid ``(fh, fw)`` (row-major):
            DINO's ``q + k`` (CorrCLIP) or a VFM's features (CorrCLIPv2).
        grid: ``(fh, fw)``.
        ids: ``(h, w)`` region ids of the window (the smallest is its unsegmented region).
        eps: DBSCAN radius of the region merging; ``None``: no merging (CorrCLIPv2).

    Returns:
        ``(1, D, fh, fw)`` float32 projected features, not normalised.
    """
    fh, fw = grid
    sim = feats @ feats.T
    groups = merge_regions(resize_ids(ids, (fh, fw)), feats, eps)
    scope = scope_mask(groups.reshape(-1), sim)
    attn = torch.softmax(sim.masked_fill(~scope, float("-inf")) * TAU, dim=-1)

    x, (gh, gw) = embed_tokens(clip_visual, crop)
    _, token_region = torch.unique(resize_ids(groups, (gh, gw)), return_inverse=True)
    regions = int(token_region.max()) + 1
    mask = _semantic_mask(token_region, regions, x.dtype)
    seq = torch.cat([x[:, :1].expand(1, regions, -1), x], dim=1)
    blocks = clip_visual.transformer.resblocks
    chosen = spatial_blocks(len(blocks))
    spatial = []
    for idx, blk in enumerate(blocks[:-1]):
        seq = run_block(blk, seq, mask)
        if idx in chosen:
            spatial.append(seq[:, regions:])
    last = blocks[-1]
    if not spatial:  # one block: the spatial branch sees the embedding
        spatial.append(seq[:, regions:])
    both = torch.cat([seq[:, regions:], torch.stack(spatial).mean(0)], dim=0)  # (2, T, C)
    width = last.attn.embed_dim
    w_v = last.attn.in_proj_weight[2 * width :]
    b_v = None if last.attn.in_proj_bias is None else last.attn.in_proj_bias[2 * width :]
    v = F.linear(last.ln_1(both), w_v, b_v)[:, 1:]  # (2, gh * gw, C)
    v = v.transpose(1, 2).reshape(2, width, gh, gw)
    v = F.interpolate(v, size=(fh, fw), mode="bilinear", align_corners=False)
    v = v.flatten(2).transpose(1, 2)  # (2, fh * fw, C)
    main, side = last.attn.out_proj(torch.matmul(attn.to(v.dtype), v)).unbind(0)

    copies = run_block(last, seq, mask)[0, :regions]  # (R, C)
    cell_region = resize_ids(token_region.reshape(gh, gw), (fh, fw)).reshape(-1)
    semantic = copies[cell_region]
    ln = clip_visual.ln_post
    out = ln(main) + ln(side) * SPATIAL_WEIGHT + ln(semantic) * SEMANTIC_WEIGHT
    out = out @ clip_visual.proj  # (fh * fw, D)
    return out.T.reshape(1, -1, fh, fw).float()


def corrclip_window_features(
    clip_visual: nn.Module,
    dino: nn.Module,
    crops: Tensor,
    ids: Tensor,
    *,
    clip_mean: Sequence[float] = OPENAI_MEAN,
    clip_std: Sequence[float] = OPENAI_STD,
    eps: float | None = DBSCAN_EPS,
) -> Tensor:
    """CorrCLIP's projected patch features of windows, on the DINO grid.

    Args:
        clip_visual: open_clip ViT image tower (``model.visual``).
        dino: DINO ViT (:func:`~ovseg.methods.dino.build_dino` / ``tiny_dino``).
        crops: ``(B, 3, h, w)`` float, CLIP-normalised (padded windows).
        ids: ``(B, 1, h, w)`` region ids of the windows (float or int; the smallest per window
            is its unsegmented region).
        clip_mean, clip_std: 0-1 constants undone before DINO's own normalisation.
        eps: DBSCAN radius of the region merging; ``None``: no merging (CorrCLIPv2's bank
            builder).

    Returns:
        ``(B, D, h // pd, w // pd)`` float32 (``pd`` DINO's patch size), not normalised. Windows
        are computed one at a time (each has its own regions).
    """
    if not isinstance(crops, Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
        raise TypeError("crops must be a (B, 3, h, w) tensor")
    if not isinstance(ids, Tensor) or ids.shape != (crops.shape[0], 1, *crops.shape[2:]):
        raise ValueError(f"ids must be (B, 1, h, w) matching crops, got {tuple(ids.shape)}")
    with torch.inference_mode():
        outs = [
            _one_window(clip_visual, dino, crops[i : i + 1], ids[i, 0], clip_mean, clip_std, eps)
            for i in range(crops.shape[0])
        ]
    return torch.cat(outs)
