"""CorrCLIPv2 (journal extension of CorrCLIP): CorrCLIP's map with a VFM's correlations, plus
support features retrieved from a memory bank of unlabeled images (VISR) and an auxiliary CLIP
stored in the same bank (DMCE).

Reproduces ``zdk258/CorrCLIP`` folder ``CorrCLIPv2/`` (``corrclip_segmentor.py``, its vendored
``open_clip/transformer.py``, ``vfms/factory.py``, ``configs/``) in float32 (the reference
runs float16 on CUDA). Per image (:func:`corrclipv2_logits`):

1. The image is resized as mmcv ``imrescale(img, (2048, short_side))`` and CLIP-normalised;
   the region id map (original size; ``masks=``, else SAM 2 automatic masks as CorrCLIP v1
   or, with ``mask_generator="eomt"``, EoMT's panoptic segments)
   resized to it by nearest.
2. VFM features of the *original* image (:func:`~ovseg.methods.vfm.vfm_dense`), resized
   bilinearly to the resized image, L2-normalised per pixel.
3. Main map: mmseg sliding windows (``slide_crop`` / ``slide_stride``), each padded (centred)
   to a multiple of 56 (image zeros, ids 10000, VFM features by edge replication). Per window
   the VFM crop is resized bilinearly to twice CLIP's token grid (``(h // p) * 2``: 42 x 42 for
   a 336 window and patch 16), flattened and L2-normalised; CorrCLIP's last block
   (:func:`~ovseg.methods.corrclip.corrclip_window_core`) runs on it **without** the DBSCAN
   merging (commented out in v2's code); cosine logits with the text, resized bilinearly to the
   window; windows averaged at the resized size.
4. Support (VISR), with a bank: every region id of the resized map, the unsegmented one
   included, gives a query = the mean of its pixels' normalised VFM features, L2-normalised;
   the bank returns its top ``num_support`` (20) neighbours
   (:meth:`~ovseg.methods.bank.MemoryBank.search`); their rows of the main CLIP's store are
   averaged and L2-normalised into a support feature, whose cosine with the main CLIP's text
   is the region's support logit, painted on its pixels. DMCE: the same neighbours' rows of the
   auxiliary store (DFN ViT-B/16 by default) against the auxiliary CLIP's text of the same
   queries; the two support maps are averaged.
5. ``logits = alpha * main + (1 - alpha) * support`` (``alpha`` 0.5, fixed in the reference),
   resized bilinearly to the original size.

Probabilities: ``softmax(logit_scale * logits)`` over all queries (40), per entry the max over
its synonyms (every entry, as v2's ``scatter_reduce``). Labels: argmax; pixels whose top
probability is below ``prob_threshold`` become the background class. Last step
(:meth:`CorrCLIPv2.finish`): every region except the smallest id takes its majority label
(``torch.mode``: ties to the smallest).

Reference defaults (``configs/base_config.py``): CLIP MetaCLIP ViT-L/14 QuickGELU
(``metaclip_fullcc``; ViT-B/16 for the B rows), VFM C-RADIOv3-L (``radiov3``), bank ``coco``,
auxiliary CLIP ``hf-hub:apple/DFN2B-CLIP-ViT-B-16`` (store ``dfnclip_b``), ``num_support`` 20,
mask generator EntitySeg (pre-computed masks for the published rows). Per dataset
(:meth:`CorrCLIPv2.configure`, from ``configs/cfg_*.py``, on the ten benchmarks: the eight,
ADE20K-847 ``ade847`` and PASCAL Context-459 ``context459``): short side 336 (ADE20K, ADE-847
448; Cityscapes 784), windows 336 / 112 (Cityscapes 224 / 112), ``prob_threshold`` VOC21 0.2,
Context60 0.15, COCO-Object 0.25, else 0. Class files (:meth:`CorrCLIPv2.class_file`):
``CorrCLIPv2/configs/cls_*.txt``, which are CorrCLIP's but for Cityscapes, plus ADE-847's and
Context-459's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.methods.config import MethodConfig, preset
from ovseg.methods.corrclip import PAD_ID, CorrClip, corrclip_window_core
from ovseg.methods.dense import class_max
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.region_options import RegionOptions
from ovseg.methods.regions import rank_ids, resize_ids
from ovseg.methods.slide import slide_logits
from ovseg.methods.vfm import vfm_dense

__all__ = [
    "ALPHA",
    "PRESETS",
    "CorrCLIPv2",
    "CorrCLIPv2Config",
    "corrclipv2_logits",
    "corrclipv2_window_features",
    "region_queries",
    "support_logits",
]

ALPHA = 0.5
PRESETS: dict[str, dict] = {
    "voc21": {"prob_threshold": 0.2},
    "context60": {"prob_threshold": 0.15},
    "coco_object": {"prob_threshold": 0.25},
    "voc20": {},
    "context59": {},
    "coco_stuff": {},
    "cityscapes": {"short_side": 784, "slide_crop": 224, "slide_stride": 112},
    "ade20k": {"short_side": 448},
    "ade847": {"short_side": 448},
    "context459": {},
}
"""Per-dataset settings of ``CorrCLIPv2/configs/cfg_*.py`` over :class:`CorrCLIPv2Config`."""


@dataclass(frozen=True)
class CorrCLIPv2Config(RegionOptions, MethodConfig):
    """All of CorrCLIPv2's options (sizes in pixels), besides :class:`MethodConfig`'s and
    where its regions come from (``mask_generator``, ``eomt_model``:
    :class:`~ovseg.methods.region_options.RegionOptions`).

    Attributes:
        short_side, long_cap: the mmcv ``imrescale`` target ``(long_cap, short_side)``.
        slide_crop, slide_stride: window and stride; ``slide_crop=None``: one pass.
        pad_multiple: windows padded (centred) to a multiple of it (56).
        logit_scale: multiplier of the cosine logits before the softmax (40).
        prob_threshold: pixels whose top probability is below it become background.
        num_support: neighbours retrieved per region (20).
        alpha: weight of the image's own map in the blend (0.5).
        use_bank: False: no retrieval (CorrCLIP v1's map with the VFM's correlations).
        use_aux: DMCE with the bank's auxiliary store; None: when the bank has one.
        batch_windows: windows per call (CorrCLIP runs one window at a time; kept for the
            shared window loop).
    """

    short_side: int = 336
    long_cap: int = 2048
    slide_crop: int | None = 336
    slide_stride: int = 112
    pad_multiple: int = 56
    logit_scale: float = 40.0
    prob_threshold: float = 0.0
    num_support: int = 20
    alpha: float = ALPHA
    use_bank: bool = True
    use_aux: bool | None = None
    batch_windows: int = 1

    def __post_init__(self):
        super().__post_init__()
        for name in ("short_side", "long_cap", "slide_stride", "pad_multiple", "num_support"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.slide_crop is not None and (
            isinstance(self.slide_crop, bool)
            or not isinstance(self.slide_crop, int)
            or not 1 <= self.slide_stride <= self.slide_crop
        ):
            raise ValueError(
                f"slide_crop must be None or an int >= slide_stride ({self.slide_stride}), "
                f"got {self.slide_crop!r}"
            )
        if not (isinstance(self.logit_scale, (int, float)) and self.logit_scale > 0):
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale!r}")
        for name in ("prob_threshold", "alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not isinstance(self.use_bank, bool) or self.use_aux not in (None, True, False):
            raise ValueError("use_bank must be a bool and use_aux None or a bool")
        if self.batch_windows != 1:
            raise ValueError("batch_windows must be 1 (each window has its own regions)")


def _clip_patch(clip_visual: nn.Module) -> int:
    k = clip_visual.conv1.kernel_size
    return int(k[0] if isinstance(k, tuple) else k)


def corrclipv2_window_features(
    clip_visual: nn.Module, crops: Tensor, ids: Tensor, vfm_crops: Tensor
) -> Tensor:
    """CorrCLIPv2's projected features of windows ``(B, D, 2 * h // p, 2 * w // p)``.

    Args:
        crops: ``(B, 3, h, w)`` CLIP-normalised (padded) windows.
        ids: ``(B, 1, h, w)`` region ids of the windows.
        vfm_crops: ``(B, C, h, w)`` the VFM features at the resized image's size, cut (and
            padded) as the windows.
    """
    p = _clip_patch(clip_visual)
    h, w = crops.shape[-2:]
    grid = (h // p * 2, w // p * 2)
    with torch.inference_mode():
        feats = F.interpolate(vfm_crops.float(), size=grid, mode="bilinear")
        feats = F.normalize(feats.flatten(2).transpose(1, 2), dim=-1)
        outs = [
            corrclip_window_core(clip_visual, crops[i : i + 1], feats[i], grid, ids[i, 0], None)
            for i in range(crops.shape[0])
        ]
    return torch.cat(outs)


def region_queries(vfm_map: Tensor, ids: Tensor) -> Tensor:
    """Retrieval queries ``(R, C)``: per id of ``ids`` (ascending, the unsegmented one
    included) the mean of ``vfm_map`` ``(1, C, H, W)`` over its pixels, L2-normalised."""
    nhwc = vfm_map[0].permute(1, 2, 0)
    values = torch.unique(ids)
    return F.normalize(torch.stack([nhwc[ids == v].mean(0) for v in values]), dim=-1)


def support_logits(bank, queries: Tensor, ids: Tensor, texts: dict[str, Tensor], k: int) -> Tensor:
    """The support map ``(Q, H, W)``: per region, the cosine of its support feature with the
    text, for each store in ``texts`` (``{store key: (Q, D) text}``), averaged over stores."""
    _, rows = bank.search(queries, k)
    _, inverse = torch.unique(ids, return_inverse=True)
    total = None
    for key, text in texts.items():
        logits = bank.support(rows, key) @ text.float().T  # (R, Q)
        total = logits if total is None else total + logits
    total = total * (1.0 / len(texts)) if len(texts) > 1 else total
    return total[inverse].permute(2, 0, 1)


def corrclipv2_logits(
    clip_visual: nn.Module,
    vfm,
    image: np.ndarray,
    regions: np.ndarray,
    text: Tensor,
    config: CorrCLIPv2Config,
    bank=None,
    aux_text: Tensor | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """CorrCLIPv2's blended cosine logits ``(Q, H, W)`` float32 at the input size.

    Args:
        clip_visual: the main CLIP's open_clip ViT image tower.
        vfm: a VFM (:mod:`ovseg.methods.vfm`).
        image: RGB uint8 ``(H, W, 3)``. regions: int ``(H, W)`` region id map.
        text: ``(Q, D)`` unit-norm main-CLIP query embeddings.
        config: :class:`CorrCLIPv2Config`.
        bank: a :class:`~ovseg.methods.bank.MemoryBank` (its first store is the main CLIP's,
            the second the auxiliary one's); None or ``config.use_bank=False``: no support.
        aux_text: ``(Q, D_aux)`` the auxiliary CLIP's embeddings of the same queries (DMCE).
        mean, std: CLIP normalisation (fractions of 255); None: the references' constants.
    """
    if not isinstance(regions, np.ndarray) or regions.shape != image.shape[:2]:
        raise ValueError("regions must be an int id map of the image's (H, W)")
    ranks = rank_ids(regions)
    h0, w0 = image.shape[:2]
    size = imrescale_size(h0, w0, config.short_side, config.long_cap)
    device = clip_visual.conv1.weight.device
    x = normalize_image(resize_image(image, size), mean, std).to(device)
    ids = resize_ids(torch.from_numpy(ranks), size).to(device)
    with torch.inference_mode():
        feats = F.interpolate(vfm_dense(vfm, image).to(device), size=size, mode="bilinear")
        feats = F.normalize(feats, dim=1)
    crop = config.slide_crop
    preds = slide_logits(
        x,
        lambda c, i, f: corrclipv2_window_features(clip_visual, c, i, f),
        text.to(device=device, dtype=torch.float32),
        crop=crop,
        stride=config.slide_stride if crop is not None else None,
        pad_multiple=config.pad_multiple if crop is not None else None,
        aux=[ids[None, None].float(), feats],
        aux_pad=[float(max(PAD_ID, int(ranks.max()) + 1)), "replicate"],
    )[0]
    with torch.inference_mode():
        if bank is not None and config.use_bank:
            keys = list(bank.stores)
            texts = {keys[0]: text.to(device)}
            if _use_aux(config, bank, aux_text):
                texts[keys[1]] = aux_text.to(device)
            support = support_logits(
                bank, region_queries(feats, ids), ids, texts, config.num_support
            ).to(device)
            preds = preds * config.alpha + support * (1 - config.alpha)
        return F.interpolate(preds[None], size=(h0, w0), mode="bilinear")[0]


def _use_aux(config: CorrCLIPv2Config, bank, aux_text) -> bool:
    has = len(bank.stores) > 1 and aux_text is not None
    if config.use_aux and not has:
        raise ValueError(
            "use_aux=True needs a bank opened with an auxiliary store and the auxiliary CLIP's "
            "text embeddings"
        )
    return has if config.use_aux is None else bool(config.use_aux)


class CorrCLIPv2(CorrClip):
    """``method="corrclipv2"`` (58.5 mIoU over eight benchmarks with ViT-B/16 and the COCO
    bank): see the module docstring. Needs the main CLIP, a VFM (``Segmenter(vfm="radiov3")``)
    and regions (``masks=`` per call, else SAM 2's automatic masks, so a SAM model, or
    EoMT's segments with ``mask_generator="eomt"``); with
    ``use_bank`` (the default) a memory bank (``Segmenter(bank="BANK/")``), whose auxiliary
    store needs the auxiliary CLIP (``Segmenter(aux_clip="ViT-B-16/dfn2b")``) for DMCE. Its
    regions and its last step (every region takes its majority) are CorrCLIP's."""

    name = "corrclipv2"
    needs = frozenset({"clip", "regions", "vfm", "bank"})
    Config = CorrCLIPv2Config
    per_dataset = PRESETS
    hints = {
        **CorrClip.hints,
        "vfm": "radiov3",
        "bank": "path/to/bank",
    }

    @classmethod
    def configure(cls, dataset: str | None = None, **options) -> CorrCLIPv2Config:
        return preset(cls.Config, cls.name, dataset, {}, PRESETS, **options)

    @classmethod
    def class_file(cls, dataset: str) -> list[list[str]] | None:
        from ovseg.methods.classnames import class_names
        from ovseg.methods.config import ALL_DATASETS

        return class_names("corrclipv2", dataset) if dataset in ALL_DATASETS else None

    @classmethod
    def check_specs(cls, specs, flags: bool = False) -> None:
        """As every method, except that the bank is checked when a run asks for it (a run
        with ``use_bank=False`` needs none)."""
        super().check_specs({**specs, "bank": specs.get("bank") or "later"}, flags)

    def probabilities(self, image, vocab, models, config, regions=None) -> Tensor:
        """``(E, H, W)`` float32: entries of ``vocab`` (classes then background names)."""
        ids = self.region_map(image, models, regions, config)
        clip = models.clip
        text = vocab.text_embeddings(clip)
        bank = None
        if config.use_bank:
            bank = models.bank
            if bank is None:
                raise ValueError(
                    "method 'corrclipv2' needs a memory bank: Segmenter(bank='BANK/') (build "
                    "one with `ovseg bank build IMAGES -o BANK/`), or use_bank=False"
                )
        aux_clip = getattr(bank, "aux_clip", None) if bank is not None else None
        aux_text = vocab.text_embeddings(aux_clip) if aux_clip is not None else None
        mean, std = self.mean_std(models)
        logits = corrclipv2_logits(
            self.clip_visual(models), models.vfm, image, ids, text, config, bank, aux_text,
            mean, std,
        )  # fmt: skip
        with torch.inference_mode():
            probs = torch.softmax(logits * config.logit_scale, dim=0)
            n = len(vocab.classes) + len(vocab.background)
            return class_max(probs, [int(o) for o in vocab.owners], n).float()
