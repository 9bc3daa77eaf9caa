"""Tiny random models and region maps shared by the CorrCLIPv2 and bank tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MAIN_NAME = "ViT-B-16-quickgelu/metaclip_fullcc"  # store key metaclip_b
AUX_NAME = "hf-hub:apple/DFN2B-CLIP-ViT-B-16"  # store key dfnclip_b


def clip_cfg(embed_dim: int = 512) -> dict:
    """A 6-block ViT-B-style CLIP (patch 16, width 64) with a 1-layer text tower."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"layers": 6, "width": 64, "head_width": 32, "patch_size": 16,
                       "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
        "quick_gelu": True,
    }  # fmt: skip


def tiny_clip_backend(seed: int, name: str, embed_dim: int = 512):
    """An :class:`OpenClipBackend` on a tiny random CLIP named ``name`` (its store key)."""
    import open_clip
    from open_clip.model import CLIP

    from ovseg.scoring.backends import OpenClipBackend

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**clip_cfg(embed_dim)).eval()
        for p in model.parameters():  # livelier than open_clip's init
            p.data.add_(0.05 * torch.randn_like(p))
    return OpenClipBackend(model, open_clip.get_tokenizer("ViT-B-16"), name=name)


def tiny_models(embed_dim: int = 512, vfm_dim: int = 64):
    """``SimpleNamespace(clip, aux, dino, vfm)``: main and auxiliary CLIPs, DINO B/8, DINOv2."""
    from ovseg.methods.dino import tiny_dino
    from ovseg.methods.vfm import tiny_dinov2_vfm

    return SimpleNamespace(
        clip=tiny_clip_backend(1, MAIN_NAME, embed_dim),
        aux=tiny_clip_backend(2, AUX_NAME, embed_dim),
        dino=tiny_dino(patch_size=8, seed=1),
        vfm=tiny_dinov2_vfm(seed=3, dim=vfm_dim, name="dinov2"),
    )


def label_regions(labels: np.ndarray, cell: tuple[int, int], min_area: int = 20) -> np.ndarray:
    """Class-agnostic regions from a label map: connected components of each label, cut by a
    grid of ``cell`` pixels; pieces under ``min_area`` pixels are unsegmented (0)."""
    import cv2

    h, w = labels.shape
    grid = (np.arange(h)[:, None] // cell[0]) * 1000 + np.arange(w)[None] // cell[1]
    ids = np.zeros((h, w), np.int64)
    nxt = 1
    for v in np.unique(labels):
        n, comp = cv2.connectedComponents((labels == v).astype(np.uint8), connectivity=4)
        for c in range(1, n):
            part = comp == c
            for g in np.unique(grid[part]):
                piece = part & (grid == g)
                if piece.sum() >= min_area:
                    ids[piece] = nxt
                    nxt += 1
    return ids


def camvid_pairs(camvid: Path, count: int, start: int = 0, size: tuple[int, int] | None = None):
    """``[(stem, RGB uint8, labels)]`` of CamVid frames, optionally resized to ``(h, w)``."""
    from PIL import Image

    out = []
    for path in sorted((camvid / "images").glob("*.png"))[start : start + count]:
        img = Image.open(path).convert("RGB")
        lab = Image.open(camvid / "labels" / path.name)
        if size is not None:
            img = img.resize(size[::-1], Image.Resampling.BILINEAR)
            lab = lab.resize(size[::-1], Image.Resampling.NEAREST)
        out.append((path.stem, np.array(img), np.array(lab)))
    return out
