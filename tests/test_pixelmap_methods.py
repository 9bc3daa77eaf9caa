"""Each dense method's PixelMap equals its whole-image probabilities (tiny random models).

The map is built from the method's low-resolution logits (``low_res=True`` / ``_lowres``); its
tiles, on tile sizes that do not divide the odd-sized images, must equal the ``(K, H, W)``
tensor of the existing function to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.methods.config import method_config
from ovseg.methods.dense import class_max, dense_pixelmap, dense_probabilities

open_clip = pytest.importorskip("open_clip")

QUERY_CLASS = [0, 0, 1, 2, 2, 3, 5]
K = 6


def _clip(layers=3, image_size=224, seed=0):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(
                layers=layers, width=64, head_width=32, patch_size=16, image_size=image_size
            ),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        ).eval()
        with torch.no_grad():  # livelier attention than the default init
            for blk in model.visual.transformer.resblocks:
                blk.attn.in_proj_weight.mul_(3.0)
                blk.attn.in_proj_bias.normal_(0, 0.3)
    return model.visual


@pytest.fixture(scope="module")
def visual():
    return _clip()


@pytest.fixture(scope="module")
def text():
    t = torch.randn(len(QUERY_CLASS), 32, generator=torch.Generator().manual_seed(3))
    return F.normalize(t, dim=-1)


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[(yy // 30 + xx // 45) % 2 == 0] //= 3  # blocks, so the maps have structure
    return img


def _same(pm, probs, atol=1e-5):
    assert pm.shape == tuple(probs.shape)
    np.testing.assert_allclose(pm.numpy(), probs.numpy(), atol=atol, rtol=0)


@pytest.mark.parametrize(
    ("method", "dataset", "size", "overrides"),
    [
        ("sclip", None, (131, 207), dict(short_side=112)),  # sliding windows
        ("sclip", None, (97, 150), dict(short_side=112, slide_crop=None)),  # whole: grid
        ("clearclip", None, (131, 207), dict(short_side=120, slide_crop=96, slide_stride=48)),
        ("naclip", "voc21", (101, 163), dict(short_side=112, pamr_steps=2)),  # whole + PAMR
        ("naclip", None, (141, 113), dict(short_side=96, pamr_steps=3, pamr_dilations=(2, 4))),
    ],
)
def test_dense_pixelmap_equals_dense_probabilities(visual, text, method, dataset, size, overrides):
    cfg = method_config(method, dataset, **overrides)
    img = _image(*size)
    probs = dense_probabilities(method, visual, img, text, QUERY_CLASS, K, cfg)
    _same(dense_pixelmap(method, visual, img, text, QUERY_CLASS, K, cfg, tile_size=45), probs)


def test_dense_pixelmap_bad_input(visual, text):
    cfg = method_config("sclip")
    img = _image(40, 50)
    with pytest.raises(ValueError, match="query_class"):
        dense_pixelmap("sclip", visual, img, text, QUERY_CLASS[:-1], K, cfg)
    with pytest.raises(ValueError, match="config is for"):
        dense_pixelmap("naclip", visual, img, text, QUERY_CLASS, K, cfg)


@pytest.mark.parametrize("crop", [112, None])
def test_proxyclip_pixelmap(visual, text, crop):
    from ovseg.methods.dino import tiny_dino
    from ovseg.methods.proxyclip import proxyclip_pixelmap, proxyclip_probabilities

    dino = tiny_dino(patch_size=8, seed=0)
    cfg = method_config("proxyclip", short_side=112, slide_crop=crop, slide_stride=56)
    img = _image(121, 173, seed=1)
    probs = proxyclip_probabilities(
        visual, dino, img, text, QUERY_CLASS, K, cfg.short_side, crop, cfg.slide_stride,
        cfg.logit_scale, beta=cfg.beta, gamma=cfg.gamma, pad_multiple=cfg.pad_multiple,
        long_cap=cfg.long_cap, batch_windows=cfg.batch_windows,
    )  # fmt: skip
    _same(proxyclip_pixelmap(visual, dino, img, text, QUERY_CLASS, K, cfg, tile_size=50), probs)


def test_corrclip_pixelmap(text):
    from ovseg.methods.corrclip import corrclip_pixelmap, corrclip_probabilities
    from ovseg.methods.dino import tiny_dino

    clip, dino = _clip(layers=6, image_size=64, seed=3), tiny_dino(patch_size=8, seed=1)
    img = _image(59, 117, seed=2)
    ids = np.zeros(img.shape[:2], np.int64)
    ids[4:30, 6:50], ids[20:59, 40:100] = 7, 3
    cfg = method_config("corrclip", short_side=60, slide_crop=56, slide_stride=40)
    probs = corrclip_probabilities(clip, dino, img, ids, text, QUERY_CLASS, K, cfg)
    _same(corrclip_pixelmap(clip, dino, img, ids, text, QUERY_CLASS, K, cfg, tile_size=33), probs)


@pytest.mark.filterwarnings("ignore:ovseg. the tiny random SAM")
def test_trident_pixelmap(text):
    from ovseg.methods.dino import tiny_dino
    from ovseg.methods.trident import sam_guides, trident_logits, trident_pixelmap
    from ovseg.models.tiny import tiny_clip, tiny_sam
    from ovseg.proposals.sam import Proposer

    torch.manual_seed(0)
    visual, proposer = tiny_clip().visual, Proposer(tiny_sam())
    dino = tiny_dino(patch_size=16, seed=1)
    cfg = method_config("trident", short_side=80, slide_crop=64, slide_stride=32)
    img = _image(101, 170, seed=3)
    guides = sam_guides(proposer, img, cfg, visual)
    with torch.no_grad():
        logits = trident_logits(visual, dino, guides, img, text, cfg)
    probs = class_max(torch.softmax(logits * cfg.logit_scale, dim=0), QUERY_CLASS, K)
    pm = trident_pixelmap(visual, dino, guides, img, text, QUERY_CLASS, K, cfg, tile_size=64)
    _same(pm, probs)
    # its refinement's half-resolution view
    half = F.interpolate(probs[None], size=(50, 85), mode="bilinear", align_corners=False)[0]
    _same(pm.resize((50, 85)), half)
