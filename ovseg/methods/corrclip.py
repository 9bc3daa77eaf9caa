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

Per window: :mod:`ovseg.methods.corrclip_window`.

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
from ovseg.methods.config import CorrClipConfig
from ovseg.methods.corrclip_window import (
    PAD_ID,
    corrclip_dino_features,
    corrclip_window_core,
    corrclip_window_features,
    spatial_blocks,
)
from ovseg.methods.dense import class_max
from ovseg.methods.geometry import imrescale_size, normalize_image, resize_image
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.protocol import Finished
from ovseg.methods.regions import rank_ids, resize_ids
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

CORRCLIP_GRID = {"points_per_side": 8, "pred_iou_thresh": 0.4, "stability_score_thresh": 0.4}
"""CorrCLIP's SAM 2 automatic-mask settings (with ``multimask_output=False``)."""


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
    (``masks=`` per call; else ``mask_generator="sam"``: SAM's automatic masks with
    :data:`CORRCLIP_GRID`, so a SAM model; or ``mask_generator="eomt"``: EoMT's panoptic
    segments, :mod:`ovseg.proposals.eomt`). Its map is the one before the vote; :meth:`finish`
    gives every region its majority class, and the regions are the instances."""

    name = "corrclip"
    needs = frozenset({"clip", "dino", "regions"})
    Config = CorrClipConfig
    hints = {**ClipMethod.hints, "clip": "ViT-B-16-quickgelu/metaclip_fullcc"}

    def __init__(self, **options):
        super().__init__(**options)
        self._regions: tuple | None = None  # (key, id map) of the last image

    def clear_cache(self) -> None:
        self._regions = None

    def check_models(self, models) -> None:
        super().check_models(models)
        config = self.config()
        if config.mask_generator == "eomt":  # a missing checkpoint fails now
            models.eomt(config.eomt_model)

    def region_map(self, image: np.ndarray, models, regions=None, config=None) -> np.ndarray:
        """The int64 id map ``(H, W)`` of ``regions`` (bool ``(N, H, W)`` or an id map), else
        of the config's ``mask_generator`` (computed once per image): SAM's automatic masks
        with CorrCLIP's settings, or EoMT's segments."""
        from ovseg.methods.regions import region_id_map
        from ovseg.structures import image_key

        if regions is not None:
            return region_id_map(regions, image.shape[:2])
        config = self.config() if config is None else config
        if config.mask_generator == "eomt":
            from ovseg.proposals.eomt import eomt_regions

            model = models.eomt(config.eomt_model)
            key = (image_key(image), "eomt", id(model))
            if self._regions is None or self._regions[0] != key:
                self._regions = (key, eomt_regions(model, image))
            return self._regions[1]
        if not models.has_sam:
            raise ValueError(
                f"method {self.name!r} needs regions: pass masks= (bool (N, H, W) or an int id "
                "map, 0 = unsegmented), build the Segmenter with a SAM model, or set "
                "mask_generator='eomt'"
            )
        from ovseg.proposals.grid import GridOptions, automatic_masks
        from ovseg.proposals.sam2 import Sam2Proposer
        from ovseg.proposals.sam2_grid import Sam2GridOptions

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
        ids = self.region_map(image, models, regions, config)
        mean, std = self.mean_std(models)
        visual = self.clip_visual(models)
        return corrclip_probabilities(
            visual, models.dino, image, ids, text, owners, entries, config, mean, std
        )

    def query_pixelmap(
        self, image, text, owners, entries, models, config, regions=None, **map_options
    ):
        ids = self.region_map(image, models, regions, config)
        mean, std = self.mean_std(models)
        return corrclip_pixelmap(
            self.clip_visual(models), models.dino, image, ids, text, owners, entries, config,
            mean, std, **map_options,
        )  # fmt: skip

    def finish(self, image, probs, labels, models, config, regions=None) -> Finished:
        from ovseg.methods.regions import region_vote

        ids = self.region_map(image, models, regions, config)
        voted = region_vote(labels, ids)
        values, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(ids.shape)
        masks = np.stack([inverse == r for r in range(1, len(values))]) if len(values) > 1 \
            else np.zeros((0, *ids.shape), bool)  # fmt: skip
        classes = np.array([voted[m].flat[0] for m in masks], np.int64)
        return Finished(voted, masks, classes, np.ones(len(masks), np.float32))
