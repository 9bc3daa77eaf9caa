"""CorrCLIP (Zhang et al., ICCV 2025), v1: CLIP's last block rebuilt from DINO correlations
restricted to SAM regions, plus a spatial and a semantic branch.

Reproduces ``zdk258/CorrCLIP`` (``CorrCLIPv1/corrclip_segmentor.py`` and its vendored
``open_clip/transformer.py``) number for number in float32. Its reference models are MetaCLIP
ViT-B/16 QuickGELU (``"ViT-B-16-quickgelu/metaclip_fullcc"``) and DINO ViT-B/8
(``"dino_vitb8"``); settings per benchmark are ``method_config("corrclip", dataset)``, class
files ``class_names("corrclip", dataset)``.

Per image (:func:`corrclip_logits`): mmcv ``imrescale`` and mmseg normalisation; the region id
map (see :mod:`ovseg.methods.regions`) resized to the network input by nearest; mmseg's
sliding windows, each padded (centred) to a multiple of 56 with zeros and its ids with a value
above every id (CorrCLIP: 10000); cosine logits on the DINO grid resized bilinearly to the
window, windows averaged, resized bilinearly to the input size.

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

Differences from the reference code, none of which changes a number where that code runs:
float32 throughout (it runs float16 on CUDA); the region ids are replaced by their ranks
(same order, so the same regions; it only matters for ids >= 10000, which collide with its
padding value there); CLIP towers with fewer than 5 blocks (which its code cannot run) take
the output of block ``L-2`` as the spatial branch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.clip_blocks import embed_tokens, run_block
from ovseg.methods.dense import class_max
from ovseg.methods.dino import check_dino, dino_grid, dino_last_qkv
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.protocol import Finished
from ovseg.methods.proxy_attention import dino_input_from_clip
from ovseg.methods.regions import (
    DBSCAN_EPS,
    merge_regions,
    rank_ids,
    resize_ids,
    scope_mask,
)
from ovseg.methods.slide import slide_logits_lowres
from ovseg.methods.tiles import check_query_class
from ovseg.methods.training_free import ClipMethod

__all__ = [
    "CORRCLIP_GRID",
    "CorrClip",
    "corrclip_dino_features",
    "corrclip_logits",
    "corrclip_pixelmap",
    "corrclip_probabilities",
    "corrclip_window_core",
    "corrclip_window_features",
    "spatial_blocks",
]

TAU = 4.0
SPATIAL_WEIGHT = 1.0
SEMANTIC_WEIGHT = 0.5
PAD_ID = 10000
CORRCLIP_GRID = {"points_per_side": 8, "pred_iou_thresh": 0.4, "stability_score_thresh": 0.4}
"""CorrCLIP's SAM 2 automatic-mask settings (with ``multimask_output=False``)."""


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


def _check_inputs(image: object, regions: object, text: object) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("image must be a uint8 numpy array (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    if not isinstance(text, Tensor) or text.ndim != 2 or text.shape[0] < 1:
        raise TypeError("text must be a (Q, D) tensor with Q >= 1")
    if not isinstance(regions, np.ndarray) or not np.issubdtype(regions.dtype, np.integer):
        raise TypeError("regions must be an integer id map (H, W) (see region_id_map)")
    if regions.shape != image.shape[:2]:
        raise ValueError(f"regions are {regions.shape}, the image is {image.shape[:2]}")
    return rank_ids(regions)


def corrclip_logits(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    regions: np.ndarray,
    text: Tensor,
    config,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    low_res: bool = False,
) -> Tensor:
    """CorrCLIP's cosine logits ``(Q, H, W)`` float32 at the input size (before the softmax).

    Args:
        clip_visual, dino: the models (same device).
        image: ``(H, W, 3)`` uint8 RGB.
        regions: int ``(H, W)`` region id map (:func:`~ovseg.methods.regions.region_id_map`).
        text: ``(Q, D)`` unit-norm query embeddings.
        config: a :class:`~ovseg.methods.config.MethodConfig` (``short_side``, ``long_cap``,
            ``slide_crop``, ``slide_stride``, ``pad_multiple``, ``batch_windows``).
        mean, std: CLIP normalisation as fractions of 255; None: the references' constants.
        low_res: return instead the windows' averaged logits at the network input (or the
            patch grid of a whole-image pass), before the last bilinear resize: the tensor a
            :class:`~ovseg.methods.pixelmap.PixelMap` starts from.
    """
    ranks = _check_inputs(image, regions, text)
    h0, w0 = image.shape[:2]
    size = imrescale_size(h0, w0, config.short_side, config.long_cap)
    device = clip_visual.conv1.weight.device
    x = normalize_image(resize_image(image, size), mean, std).to(device)
    ids = resize_ids(torch.from_numpy(ranks), size).to(device)
    pad_id = max(PAD_ID, int(ranks.max()) + 1)
    window_fn = functools.partial(
        corrclip_window_features,
        clip_visual,
        dino,
        clip_mean=OPENAI_MEAN if mean is None else tuple(mean),
        clip_std=OPENAI_STD if std is None else tuple(std),
    )
    crop = config.slide_crop
    low = slide_logits_lowres(
        x,
        window_fn,
        text.to(device=device, dtype=torch.float32),
        crop=crop,
        stride=config.slide_stride if crop is not None else None,
        pad_multiple=config.pad_multiple if crop is not None else None,
        batch_windows=config.batch_windows,
        aux=ids[None, None].float(),
        aux_pad=float(pad_id),
    )
    if low_res:
        return low[0]
    with torch.inference_mode():
        return F.interpolate(low, size=(h0, w0), mode="bilinear", align_corners=False)[0]


def corrclip_probabilities(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    regions: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """CorrCLIP's class probabilities ``(K, H, W)`` float32 in ``[0, 1]`` before its vote:
    ``softmax(logit_scale * cosine)`` over the queries, then per class the max over its
    queries. Arguments as :func:`corrclip_logits`; ``query_class`` the class of each query."""
    qc = check_query_class(query_class, _rows(text), num_classes)
    logits = corrclip_logits(clip_visual, dino, image, regions, text, config, mean, std)
    with torch.inference_mode():
        probs = torch.softmax(logits * config.logit_scale, dim=0)
        return class_max(probs, qc, num_classes).float()


def corrclip_pixelmap(
    clip_visual: nn.Module,
    dino: nn.Module,
    image: np.ndarray,
    regions: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **map_options,
) -> PixelMap:
    """:func:`corrclip_probabilities` as a :class:`~ovseg.methods.pixelmap.PixelMap` (the
    models run now, the input-size steps per tile); ``map_options``: ``work_bytes`` or
    ``tile_size``. The vote that follows needs only the map's labels (``predict``)."""
    qc = check_query_class(query_class, _rows(text), num_classes)
    low = corrclip_logits(clip_visual, dino, image, regions, text, config, mean, std, True)
    return PixelMap.from_logits(
        low, image.shape[:2], config.logit_scale, qc, num_classes, **map_options
    )


def _rows(text) -> int:
    return text.shape[0] if isinstance(text, Tensor) and text.ndim == 2 else -1


class CorrClip(ClipMethod):
    """CorrCLIP v1 (51.0 mIoU over eight benchmarks): needs CLIP, DINO ViT-B/8 and regions
    (``masks=`` per call, else SAM's automatic masks with :data:`CORRCLIP_GRID`, so a SAM
    model). Its map is the one before the vote; :meth:`finish` gives every region its
    majority class, and the regions are the instances."""

    name = "corrclip"
    needs = frozenset({"clip", "dino", "regions"})
    hints = {**ClipMethod.hints, "clip": "ViT-B-16-quickgelu/metaclip_fullcc"}

    def __init__(self, **options):
        super().__init__(**options)
        self._regions: tuple | None = None  # (key, id map) of the last image

    def clear_cache(self) -> None:
        self._regions = None

    def region_map(self, image: np.ndarray, models, regions=None) -> np.ndarray:
        """The int64 id map ``(H, W)`` of ``regions`` (bool ``(N, H, W)`` or an id map), else
        of SAM's automatic masks with CorrCLIP's settings (computed once per image)."""
        from ovseg.methods.regions import region_id_map

        if regions is not None:
            return region_id_map(regions, image.shape[:2])
        if not models.has_sam:
            raise ValueError(
                "method 'corrclip' needs regions: pass masks= (bool (N, H, W) or an int id map, "
                "0 = unsegmented) or build the Segmenter with a SAM model"
            )
        from ovseg.proposals.grid import GridOptions, automatic_masks
        from ovseg.proposals.sam2 import Sam2Proposer
        from ovseg.proposals.sam2_grid import Sam2GridOptions
        from ovseg.structures import image_key

        proposer = models.proposer
        options = GridOptions(**CORRCLIP_GRID)
        if isinstance(proposer, Sam2Proposer):  # SAM 2's generator, one mask per point
            options = Sam2GridOptions(**CORRCLIP_GRID, multimask_output=False)
        key = (image_key(image), options, id(proposer))
        if self._regions is None or self._regions[0] != key:
            proposer.set_image(image)
            ids = region_id_map(automatic_masks(proposer, options).masks, image.shape[:2])
            self._regions = (key, ids)
        return self._regions[1]

    def query_probabilities(self, image, text, owners, entries, models, config, regions=None):
        ids = self.region_map(image, models, regions)
        mean, std = self.mean_std(models)
        visual = self.clip_visual(models)
        return corrclip_probabilities(
            visual, models.dino, image, ids, text, owners, entries, config, mean, std
        )

    def query_pixelmap(
        self, image, text, owners, entries, models, config, regions=None, **map_options
    ):
        ids = self.region_map(image, models, regions)
        mean, std = self.mean_std(models)
        return corrclip_pixelmap(
            self.clip_visual(models), models.dino, image, ids, text, owners, entries, config,
            mean, std, **map_options,
        )  # fmt: skip

    def finish(self, image, probs, labels, models, config, regions=None) -> Finished:
        from ovseg.methods.regions import region_vote

        ids = self.region_map(image, models, regions)
        voted = region_vote(labels, ids)
        values, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(ids.shape)
        masks = np.stack([inverse == r for r in range(1, len(values))]) if len(values) > 1 \
            else np.zeros((0, *ids.shape), bool)  # fmt: skip
        classes = np.array([voted[m].flat[0] for m in masks], np.int64)
        return Finished(voted, masks, classes, np.ones(len(masks), np.float32))
