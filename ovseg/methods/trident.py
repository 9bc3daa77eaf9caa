"""Trident (ICCV 2025): ProxyCLIP windows spliced into one grid, aggregated by SAM's attention.

Reproduces ``YuHengsss/Trident`` (``trident.py``, its vendored ``open_clip/transformer.py``
``custom_attn`` / ``guidance_attn`` / ``get_sam_sim`` and ``segment_anything`` image encoder)
number for number in float32. Reference models: CLIP ViT-B/16 OpenAI, DINO ViT-B/16, SAM ViT-B.
The SAM refinement that follows is :mod:`ovseg.methods.trident_refine`.

Per image (:func:`trident_logits`):

1. CLIP side: mmcv ``imrescale`` to the short side, mmseg normalisation, then Trident's
   ``preprocess_image`` (:func:`clip_input_size`): unless both sides are multiples of the CLIP
   patch ``p``, the long side is rounded up to a multiple of ``p``, the short side scaled with
   it (truncated) and rounded up, each side at least the window, torch bilinear.
2. Windows of ``slide_crop`` at ``slide_stride`` (mmseg's placement). Per window: DINO's
   final-norm features ``f``, ``S = cos(f_i, f_j)``, ``S = (S - beta * mean(S)) * gamma`` with
   **one mean over all windows of the image** (Trident runs them as one batch), ``S < 0 ->
   -inf``, ``A = softmax(S)``; CLIP blocks ``0 .. L-2``, class token dropped, the last block's
   value projection of ``ln_1``, resized bilinearly to DINO's grid, ``out_proj(A v)``.
3. Windows spliced into the whole grid (sum / count of windows per cell), resized bilinearly to
   SAM's valid token grid.
4. SAM side (:func:`sam_aggregate`): SAM's input is the original image stretched (OpenCV) so
   both sides are multiples of ``p`` (:func:`sam_input_size`), then its own longest-side
   resize. From the last (global) encoder block: attention ``softmax(q k^T s + rel pos)`` over
   the whole padded grid and values ``v``, both cropped to the valid grid without
   renormalising; per head ``sim = cos(v_i, v_j)``; per query ``t = cos_fac * mean(sim)`` over
   heads and keys, capped at 0.9 (and ``t < 0 -> 0.6`` unless ``refine_neg_cos``); attention
   kept where ``sim > t``, averaged over heads, rows renormalised; ``out = A x``.
5. ``ln_post``, ``@ proj``, L2-normalised, cosine with the queries on SAM's grid, resized
   bilinearly to the original size. Cityscapes (``sam_halves``): SAM sees the left and right
   halves separately; each half of the grid is aggregated with its own SAM pass.

Differences from the reference, none of which changes a number where it runs: windows are
never padded (its padding to multiples of 56 is a no-op for its 336 windows; a padded window
makes its splice fail); windows may be batched (``batch_windows``); the SAM attention is
computed in row chunks instead of one ``(heads, 4096, 4096)`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.config import MethodConfig, TridentConfig
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image, slide_windows
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.protocol import Finished
from ovseg.methods.proxy_attention import (
    dino_window_features,
    proxy_similarity_mean,
    proxyclip_window_features,
)
from ovseg.methods.tiles import check_query_class
from ovseg.methods.training_free import ClipMethod

__all__ = [
    "SamGuide",
    "Trident",
    "clip_input_size",
    "sam_aggregate",
    "sam_guides",
    "sam_image",
    "sam_input_size",
    "trident_logits",
    "trident_pixelmap",
]

_CHUNK = 2**24  # attention entries (heads x queries x keys) per chunk of SAM rows


@dataclass(frozen=True)
class SamGuide:
    """SAM's encoder view of one image (or one half of it) for Trident.

    Attributes:
        block: the encoder's last block (a ``segment_anything`` ``Block`` with global
            attention and relative positions).
        block_input: that block's input ``(1, Hg, Wg, C)`` on the padded token grid.
        valid: ``(vh, vw)``, the token grid of the image inside the padding
            (``input_size // patch``).
    """

    block: nn.Module
    block_input: Tensor
    valid: tuple[int, int]

    def __post_init__(self) -> None:
        if getattr(self.block, "window_size", 0) != 0:
            raise ValueError("Trident needs SAM's last encoder block to use global attention")
        x = self.block_input
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[0] != 1:
            raise ValueError("block_input must be a (1, Hg, Wg, C) tensor")
        vh, vw = self.valid
        if not (1 <= vh <= x.shape[1] and 1 <= vw <= x.shape[2]):
            raise ValueError(f"valid grid {self.valid} must fit the token grid {x.shape[1:3]}")


def _round_up(n: int, m: int) -> int:
    return n if n % m == 0 else (n // m + 1) * m


def sam_input_size(h: int, w: int, patch: int) -> tuple[int, int]:
    """The size ``(h', w')`` SAM sees in Trident: each side rounded up to a multiple of
    ``patch`` (the image is stretched with OpenCV, not padded)."""
    return _round_up(h, patch), _round_up(w, patch)


def clip_input_size(h: int, w: int, patch: int, crop: int) -> tuple[int, int]:
    """Trident's ``preprocess_image`` size for a resized ``h x w`` input: unchanged when both
    sides are multiples of ``patch`` and at least ``crop``; else the long side rounded up to a
    multiple of ``patch``, each side scaled by it (truncated), rounded up, and at least
    ``crop``. (The reference keeps a multiple-of-patch input smaller than the window as it is
    and then fails in its splice; here such an input is enlarged too.)"""
    if h % patch == 0 and w % patch == 0 and min(h, w) >= crop:
        return h, w
    longer = max(h, w)
    dst = _round_up(longer, patch)
    nh, nw = _round_up(int(h * dst / longer), patch), _round_up(int(w * dst / longer), patch)
    return max(nh, crop), max(nw, crop)


def _rel_pos(size: int, table: Tensor) -> Tensor:
    from segment_anything.modeling.image_encoder import get_rel_pos

    return get_rel_pos(size, size, table)


def sam_aggregate(
    guide: SamGuide, values: Tensor, cos_fac: float, refine_neg_cos: bool = True
) -> Tensor:
    """Trident's SAM aggregation of ``values`` ``(N, D)`` (``N = vh * vw``, row-major on the
    valid grid): per query ``i`` the row ``A_i`` of SAM's similarity-filtered attention
    (module docstring, step 4), returning ``A @ values`` ``(N, D)`` float32."""
    block, x = guide.block, guide.block_input
    vh, vw = guide.valid
    attn_mod = block.attn
    heads = attn_mod.num_heads
    _, gh, gw, c = x.shape
    n = vh * vw
    if values.shape[0] != n:
        raise ValueError(f"values must have {n} rows (the valid grid {vh}x{vw})")
    with torch.no_grad():
        qkv = attn_mod.qkv(block.norm1(x)).reshape(gh * gw, 3, heads, -1).permute(1, 2, 0, 3)
        q, k, v = qkv.unbind(0)  # (heads, gh * gw, hd)
        hd = q.shape[-1]
        v_valid = v.reshape(heads, gh, gw, hd)[:, :vh, :vw].reshape(heads, n, hd)
        v_unit = F.normalize(v_valid, dim=-1)
        q_grid = q.reshape(heads, gh, gw, hd)
        use_rel = bool(getattr(attn_mod, "use_rel_pos", False))
        if use_rel:
            rh = _rel_pos(gh, attn_mod.rel_pos_h)  # (gh, gh, hd)
            rw = _rel_pos(gw, attn_mod.rel_pos_w)
        values = values.to(torch.float32)
        out = values.new_empty((n, values.shape[1]))
        rows = max(1, _CHUNK // (heads * vw * gh * gw))
        for r0 in range(0, vh, rows):
            r1 = min(vh, r0 + rows)
            qc = q_grid[:, r0:r1, :vw]  # (heads, r, vw, hd)
            logits = (qc * attn_mod.scale).reshape(heads, -1, hd) @ k.transpose(-2, -1)
            logits = logits.view(heads, r1 - r0, vw, gh, gw)
            if use_rel:
                rel_h = torch.einsum("nhwc,hkc->nhwk", qc, rh[r0:r1])
                rel_w = torch.einsum("nhwc,wkc->nhwk", qc, rw[:vw])
                logits = logits + rel_h[..., :, None] + rel_w[..., None, :]
            attn = logits.reshape(heads, r1 - r0, vw, gh * gw).softmax(dim=-1)
            attn = attn.view(heads, -1, gh, gw)[:, :, :vh, :vw].reshape(heads, -1, n)
            i0, i1 = r0 * vw, r1 * vw
            sim = v_unit[:, i0:i1] @ v_unit.transpose(-2, -1)  # (heads, c, n)
            thresh = cos_fac * sim.mean(dim=0, keepdim=True).mean(dim=-1, keepdim=True)
            if not refine_neg_cos:
                thresh = torch.where(thresh < 0.0, 0.6, thresh)
            thresh = torch.where(thresh > 0.9, 0.9, thresh)
            kept = torch.where(sim > thresh, attn, torch.zeros_like(attn)).mean(dim=0)
            kept = kept / kept.sum(dim=-1, keepdim=True)
            out[i0:i1] = kept @ values
        return out


def _patch(module: nn.Module, attr: str) -> int:
    p = getattr(module, attr)
    if attr == "conv1":
        return int(p.stride[0])
    p = p.patch_size
    return int(p[0] if isinstance(p, tuple) else p)


def trident_logits(
    clip_visual: nn.Module,
    dino: nn.Module,
    guides: Sequence[SamGuide],
    image: np.ndarray,
    text: Tensor,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    low_res: bool = False,
) -> Tensor:
    """Trident's cosine logits ``(Q, H, W)`` float32 at the input size, before the softmax.

    Args:
        clip_visual: open_clip ViT image tower, float32.
        dino: DINO ViT (:func:`~ovseg.methods.dino.build_dino`); its patch must divide CLIP's.
        guides: one :class:`SamGuide` of the image stretched to :func:`sam_input_size`, or two
            (left and right halves of it) when ``config.sam_halves``.
        image: ``(H, W, 3)`` uint8 RGB (the original image).
        text: ``(Q, D)`` unit-norm query embeddings.
        config: ``method_config("trident", dataset)``.
        mean, std: CLIP normalisation as fractions of 255 (None: the references' constants).
        low_res: return instead the logits on SAM's token grid ``(Q, vh, vw)`` (halves side by
            side), before their bilinear resize to the input size: the tensor a
            :class:`~ovseg.methods.pixelmap.PixelMap` starts from.
    """
    if not isinstance(config, MethodConfig) or config.method != "trident":
        raise TypeError("config must be a MethodConfig for 'trident'")
    if not isinstance(text, Tensor) or text.ndim != 2 or text.shape[0] < 1:
        raise TypeError("text must be a (Q, D) tensor with Q >= 1")
    guides = list(guides)
    if len(guides) != (2 if config.sam_halves else 1):
        raise ValueError(f"need {2 if config.sam_halves else 1} SAM guide(s), got {len(guides)}")
    patch, dpatch = _patch(clip_visual, "conv1"), _patch(dino, "patch_embed")
    if patch % dpatch:
        raise ValueError(f"DINO's patch ({dpatch}) must divide CLIP's ({patch})")
    crop, stride = config.slide_crop, config.slide_stride
    if crop is None or crop % patch:
        raise ValueError(f"slide_crop must be a multiple of the CLIP patch {patch}, got {crop}")
    if stride % patch:
        raise ValueError(f"slide_stride must be a multiple of the CLIP patch {patch}")
    h0, w0 = image.shape[:2]
    device = clip_visual.conv1.weight.device
    x = normalize_image(resize_image(image, imrescale_size(h0, w0, config.short_side,
                                                          config.long_cap)), mean, std)  # fmt: skip
    size = clip_input_size(*x.shape[-2:], patch, crop)
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x.to(device)
    cm = OPENAI_MEAN if mean is None else mean
    cs = OPENAI_STD if std is None else std
    boxes = slide_windows(size[0], size[1], crop, stride)
    n = config.batch_windows
    batches = [boxes[i : i + n] for i in range(0, len(boxes), n)]

    def crops_of(batch):
        return torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in batch])

    with torch.no_grad():
        feats = [dino_window_features(dino, crops_of(b), cm, cs) for b in batches]
        sim_mean = torch.cat([proxy_similarity_mean(f) for f in feats]).mean()
        r = patch // dpatch
        gh, gw = size[0] // patch * r, size[1] // patch * r
        width = clip_visual.transformer.width
        dst = x.new_zeros((width, gh, gw))
        count = x.new_zeros((1, gh, gw))
        for batch, f in zip(batches, feats, strict=True):
            out = proxyclip_window_features(clip_visual, dino, crops_of(batch), config.beta,
                                            config.gamma, clip_mean=cm, clip_std=cs, features=f,
                                            sim_mean=sim_mean, project=False)  # fmt: skip
            for (y1, y2, x1, x2), o in zip(batch, out, strict=True):
                sl = (slice(None), slice(y1 // dpatch, y2 // dpatch),
                      slice(x1 // dpatch, x2 // dpatch))  # fmt: skip
                dst[sl] += o
                count[sl] += 1
        dst = dst / count
        parts = [dst[:, :, : gw // 2], dst[:, :, gw // 2 :]] if config.sam_halves else [dst]
        outs = []
        for part, guide in zip(parts, guides, strict=True):
            vh, vw = guide.valid
            part = F.interpolate(part[None], size=(vh, vw), mode="bilinear", align_corners=False)
            agg = sam_aggregate(guide, part[0].flatten(1).T, config.cos_fac, config.refine_neg_cos)
            outs.append(agg.T.reshape(width, vh, vw))
        if len({o.shape[1] for o in outs}) != 1:
            raise ValueError("the two SAM halves give token grids of different heights")
        agg = torch.cat(outs, dim=2)
        feats_out = clip_visual.ln_post(agg.flatten(1).T) @ clip_visual.proj
        feats_out = F.normalize(feats_out, dim=-1)
        logits = (feats_out @ text.to(feats_out).T).T.reshape(-1, *agg.shape[1:])
        if low_res:
            return logits.float()
        logits = F.interpolate(logits[None], size=(h0, w0), mode="bilinear", align_corners=False)
        return logits[0].float()


def trident_pixelmap(
    clip_visual: nn.Module,
    dino: nn.Module,
    guides: Sequence[SamGuide],
    image: np.ndarray,
    text: Tensor,
    query_class: Sequence[int],
    num_classes: int,
    config: MethodConfig,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **map_options,
) -> PixelMap:
    """Trident's coarse class probabilities (``softmax(logit_scale * cosine)`` over the
    queries, max over each class's) as a :class:`~ovseg.methods.pixelmap.PixelMap` over its
    logits on SAM's grid; ``map_options``: ``work_bytes`` or ``tile_size``. Arguments as
    :func:`trident_logits`."""
    rows = text.shape[0] if isinstance(text, Tensor) and text.ndim == 2 else -1
    qc = check_query_class(query_class, rows, num_classes)
    low = trident_logits(clip_visual, dino, guides, image, text, config, mean, std, True)
    return PixelMap.from_logits(
        low, image.shape[:2], config.logit_scale, qc, num_classes, **map_options
    )


def sam_image(image: np.ndarray, clip_visual: nn.Module) -> np.ndarray:
    """The image Trident's SAM side sees: ``image`` stretched (OpenCV bilinear) so both sides are
    multiples of CLIP's patch (:func:`sam_input_size`); the image itself when they already are."""
    return resize_image(image, sam_input_size(*image.shape[:2], _patch(clip_visual, "conv1")))


def sam_guides(sam, image: np.ndarray, config: MethodConfig, clip_visual: nn.Module):
    """SAM's encoder view of ``image`` for :func:`trident_logits`, from a SAM ``Proposer``
    (``ovseg.proposals.sam``; its embedding cache is reused, and left holding the whole
    stretched image for the refinement and for prompts).

    Returns:
        one :class:`SamGuide`, or two (left and right halves) with ``config.sam_halves``.
    """
    if not hasattr(sam, "keep_block_input"):
        raise TypeError(
            f"Trident needs a SAM 1 ViT (e.g. sam='vit_b', its reference), not {type(sam).__name__}"
        )
    img = sam_image(image, clip_visual)
    sam.keep_block_input = True
    block = sam.model.image_encoder.blocks[-1]
    stride = int(sam.model.image_encoder.patch_embed.proj.stride[0])
    parts = [img]
    if config.sam_halves:
        if img.shape[1] % 2:
            raise ValueError(f"sam_halves needs an even width, got {img.shape[1]}")
        half = img.shape[1] // 2
        parts = [np.ascontiguousarray(img[:, :half]), np.ascontiguousarray(img[:, half:])]
    guides = []
    for part in parts:
        sam.set_image(part)
        ih, iw = sam.predictor.input_size
        guides.append(SamGuide(block, sam.block_input, (ih // stride, iw // stride)))
    if config.sam_halves:
        sam.set_image(img)
    return guides


class Trident(ClipMethod):
    """Trident (45.8 mIoU over eight benchmarks): needs CLIP, DINO ViT-B/16 and SAM ViT-B
    (``Segmenter(dino="dino_vitb16", sam="vit_b")``). Its map is the one before its SAM
    refinement; :meth:`finish` is the refinement, whose kept SAM masks are the instances."""

    name = "trident"
    needs = frozenset({"clip", "dino", "sam"})
    Config = TridentConfig
    hints = {**ClipMethod.hints, "dino": "dino_vitb16"}
    tiled = False  # its refinement reads the full-size probabilities

    @classmethod
    def check_specs(cls, specs, flags: bool = False) -> None:
        super().check_specs(specs, flags)
        if specs.get("sam_family", "sam1") != "sam1":
            raise ValueError(
                "method 'trident' reads SAM 1's ViT encoder: use sam='vit_b' (or vit_l, vit_h), "
                "not a SAM 2 model"
            )

    def query_probabilities(self, image, text, owners, entries, models, config, regions=None):
        from ovseg.methods.dense import class_max

        visual = self.clip_visual(models)
        mean, std = self.mean_std(models)
        guides = sam_guides(models.proposer, image, config, visual)
        logits = trident_logits(visual, models.dino, guides, image, text, config, mean, std)
        probs = torch.softmax(logits * config.logit_scale, dim=0)
        return class_max(probs, owners, entries)

    def finish(self, image, probs, labels, models, config, regions=None) -> Finished:
        from ovseg.methods.trident_refine import trident_refine

        sam = models.proposer
        sam.set_image(sam_image(image, self.clip_visual(models)))  # cached: no second encoder run
        refined = trident_refine(
            probs, torch.from_numpy(np.asarray(labels)), sam.predictor,
            coarse_thresh=config.coarse_thresh, minimal_area=config.minimal_area,
            sam_mask_coeff=config.sam_mask_coeff, sam_iou_thresh=config.sam_iou_thresh,
        )  # fmt: skip
        index = refined.labels.astype(np.int64)[None]
        own = np.take_along_axis(refined.scores, index, 0)[0]
        return Finished(
            labels=refined.labels.astype(np.int64),
            masks=refined.masks,
            mask_classes=refined.mask_classes,
            mask_scores=refined.mask_scores,
            confidence=np.clip(own, 0.0, 1.0),
        )
