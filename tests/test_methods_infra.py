"""Infrastructure of ovseg.methods: geometry, position tables, PAMR, Omega, config, names, text."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.methods.classnames import class_names, query_list
from ovseg.methods.config import DATASETS, METHODS, NaclipConfig, method_config
from ovseg.methods.geometry import (
    center_padding,
    imrescale_size,
    interpolate_pos_embed,
    normalize_image,
    resize_image,
    slide_windows,
)
from ovseg.methods.pamr import pamr


# ---------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    ("h", "w", "short", "expected"),
    [
        (375, 500, 336, (336, 448)),
        (500, 375, 448, (597, 448)),
        (217, 341, 336, (336, 528)),
        (1024, 2048, 560, (560, 1120)),
        (100, 3000, 336, (68, 2048)),  # long-side cap wins
        (336, 336, 336, (336, 336)),
    ],
)
def test_imrescale_size(h, w, short, expected):
    f = min(2048 / max(h, w), short / min(h, w))
    assert (int(h * f + 0.5), int(w * f + 0.5)) == expected
    assert imrescale_size(h, w, short) == expected


def test_resize_image_is_opencv_bilinear():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (217, 341, 3), dtype=np.uint8)
    for size in [(336, 528), (100, 150), (108, 170)]:  # up, down, exactly 2x down
        out = resize_image(img, size)
        assert out.dtype == np.uint8 and out.shape == (*size, 3)
        expected = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(out, expected)
    assert resize_image(img, (217, 341)) is img
    with pytest.raises(TypeError):
        resize_image(img.astype(np.float32), (10, 10))


def test_normalize_image():
    img = np.full((4, 5, 3), 200, dtype=np.uint8)
    x = normalize_image(img)
    assert x.shape == (1, 3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 0, 0], (200 - torch.tensor([122.771, 116.746, 104.094]))
                          / torch.tensor([68.501, 66.632, 70.323]))  # fmt: skip
    y = normalize_image(img, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.allclose(y, torch.full_like(y, (200 - 127.5) / 63.75))
    with pytest.raises(ValueError):
        normalize_image(img, std=(0.0, 1.0, 1.0))


@pytest.mark.parametrize(("h", "w", "crop", "stride"), [(336, 528, 224, 112), (597, 448, 448, 224),
                                                        (200, 150, 224, 112), (448, 448, 448, 224),
                                                        (560, 1120, 224, 112)])  # fmt: skip
def test_slide_windows(h, w, crop, stride):
    boxes = slide_windows(h, w, crop, stride)
    hg = max(h - crop + stride - 1, 0) // stride + 1
    wg = max(w - crop + stride - 1, 0) // stride + 1
    assert len(boxes) == hg * wg
    count = np.zeros((h, w), int)
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
        assert (y2 - y1, x2 - x1) == (min(crop, h), min(crop, w))
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    assert boxes[0][0] == 0 and boxes[0][2] == 0 and boxes[-1][1] == h and boxes[-1][3] == w


def test_center_padding():
    assert center_padding(448, 448, 16) == (0, 0, 0, 0)
    assert center_padding(200, 230, 16) == (5, 5, 4, 4)  # 230 -> 240, 200 -> 208
    assert center_padding(201, 227, 16) == (6, 7, 3, 4)  # 227 -> 240, 201 -> 208
    left, r, t, b = center_padding(217, 341, 56)
    assert (217 + t + b) % 56 == 0 and (341 + left + r) % 56 == 0 and r - left in (0, 1)


def _cubic_matrix(n, g, a=-0.75):
    scale = n / (g + 0.1)
    m = np.zeros((g, n))
    for o in range(g):
        src = scale * (o + 0.5) - 0.5
        base = math.floor(src)
        t = src - base
        ws = [
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) ** 2 + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        ]
        for k, wgt in enumerate(ws):
            m[o, min(max(base - 1 + k, 0), n - 1)] += wgt
    return m


@pytest.mark.parametrize("grid", [(21, 28), (13, 20), (14, 14), (7, 28), (28, 21), (3, 5)])
def test_interpolate_pos_embed(grid):
    torch.manual_seed(0)
    pos = torch.randn(1 + 196, 8)
    out = interpolate_pos_embed(pos, grid)
    gh, gw = grid
    assert out.shape == (1 + gh * gw, 8)
    assert torch.equal(out[0], pos[0])
    if gh * gw == 196:  # the references keep the table when the token count matches
        assert torch.equal(out, pos)
        return
    table = pos[1:].reshape(14, 14, 8).double().numpy()
    expected = np.einsum("ai,bj,ijc->abc", _cubic_matrix(14, gh), _cubic_matrix(14, gw), table)
    assert np.abs(out[1:].reshape(gh, gw, 8).numpy() - expected).max() < 1e-5
    # differs from resizing to a target size
    naive = F.interpolate(pos[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2), size=grid,
                          mode="bicubic", align_corners=False)  # fmt: skip
    assert (naive.permute(0, 2, 3, 1).reshape(-1, 8) - out[1:]).abs().max() > 1e-3
    assert torch.equal(interpolate_pos_embed(pos, grid, recompute_scale_factor=False), out)


# -------------------------------------------------------------------------------- PAMR
def _direct_pamr(img, mask, steps, dilations):
    _, h, w = img.shape
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    def at(z, y, x):
        return z[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    out = mask.clone()
    for _ in range(steps):
        new = torch.zeros_like(out)
        for y in range(h):
            for x in range(w):
                taps = torch.stack([at(img, y + dy * d, x + dx * d) for d in dilations
                                    for dy, dx in offs])  # fmt: skip
                std = taps.std(dim=0)
                nbs = [(d, dy, dx) for d in dilations for dy, dx in offs if (dy, dx) != (0, 0)]
                aff = torch.stack([(-(img[:, y, x] - at(img, y + dy * d, x + dx * d)).abs()
                                    / (1e-8 + 0.1 * std)).mean() for d, dy, dx in nbs])  # fmt: skip
                aff = torch.softmax(aff, dim=0)
                new[:, y, x] = sum(aff[i] * at(out, y + dy * d, x + dx * d)
                                   for i, (d, dy, dx) in enumerate(nbs))  # fmt: skip
        out = new
    return out


def test_pamr_matches_direct_formula():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(1, 3, 9, 11, generator=g)
    mask = torch.randn(1, 4, 9, 11, generator=g)
    ours = pamr(img, mask, steps=2, dilations=(1, 3), chunk=3)
    ref = _direct_pamr(img[0], mask[0], 2, (1, 3))
    assert (ours[0] - ref).abs().max() < 1e-5
    assert torch.equal(pamr(img, mask, steps=0, dilations=(1,)), mask)
    # constant logits stay constant (the affinities sum to 1)
    flat = pamr(img, torch.ones(1, 2, 9, 11), steps=3, dilations=(2,))
    assert torch.allclose(flat, torch.ones_like(flat), atol=1e-6)
    with pytest.raises(ValueError):
        pamr(img, mask, steps=-1)
    with pytest.raises(ValueError):
        pamr(img, mask, steps=1, dilations=(0,))


# ------------------------------------------------------------------------------- Omega
def test_naclip_omega():
    from ovseg.methods.clip_blocks import naclip_attention_addition

    gh, gw, sigma = 4, 6, 5.0
    om = naclip_attention_addition(gh, gw, sigma)
    assert om.shape == (1 + gh * gw, 1 + gh * gw)
    assert float(om[0].abs().max()) == 0.0 and float(om[:, 0].abs().max()) == 0.0  # CLS
    for p in range(gh * gw):
        for q in range(gh * gw):
            d2 = (p // gw - q // gw) ** 2 + (p % gw - q % gw) ** 2
            assert abs(float(om[1 + p, 1 + q]) - math.exp(-d2 / (2 * sigma**2))) < 1e-6
    assert torch.allclose(om, om.T)
    with pytest.raises(ValueError):
        naclip_attention_addition(2, 2, 0.0)


# ------------------------------------------------------------------------------ config
def test_method_config_values():
    assert method_config("sclip", "voc21").logit_scale == 65
    assert method_config("sclip", "voc21").area_threshold == 0.1
    assert method_config("sclip", "coco_stuff").short_side == 448
    assert method_config("sclip", "context60").prob_threshold == 0.1
    c = method_config("clearclip", "cityscapes")
    assert (c.short_side, c.slide_crop, c.slide_stride, c.pad_multiple) == (448, 224, 224, 16)
    assert method_config("clearclip", "coco_object").prob_threshold == 0.4
    n = method_config("naclip", "voc20")
    assert n.slide_crop is None and n.pamr_steps == 10 and n.pamr_dilations == (8, 16)
    assert method_config("naclip", "cityscapes").short_side == 560
    assert method_config("naclip", "coco_stuff").short_side == 336
    for m in METHODS:
        for d in DATASETS:
            cfg = method_config(m, d)
            assert cfg.method == m and cfg.dataset == d and cfg.long_cap == 2048
    over = method_config("naclip", "voc21", pamr_steps=0, slide_crop=224, pamr_dilations=[4])
    assert (over.pamr_steps, over.slide_crop, over.pamr_dilations) == (0, 224, (4,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        over.pamr_steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("short_side", 0), ("short_side", 2.5), ("short_side", True), ("long_cap", -1),
        ("slide_crop", 0), ("slide_stride", 0), ("slide_stride", 500), ("logit_scale", 0),
        ("logit_scale", float("inf")), ("prob_threshold", -0.1), ("prob_threshold", 1.5),
        ("area_threshold", 2.0), ("area_threshold", "x"), ("pamr_steps", -1),
        ("pamr_steps", 1.0), ("pamr_dilations", ()), ("pamr_dilations", (0,)),
        ("pamr_dilations", 8), ("pad_multiple", 0), ("gaussian_std", 0.0),
        ("attention", "nope"), ("batch_windows", 0),
    ],
)  # fmt: skip
def test_method_config_bad_values(name, value):
    with pytest.raises(ValueError, match=name):
        method_config("sclip", **{name: value})


def test_method_config_bad_names():
    with pytest.raises(ValueError, match="method"):
        method_config("maskclip")
    with pytest.raises(ValueError, match="dataset"):
        method_config("sclip", "voc")
    with pytest.raises(ValueError, match="unknown option"):
        method_config("sclip", crop=3)
    with pytest.raises(ValueError, match="attention"):
        method_config("sclip", attention="vanilla")
    assert method_config("clearclip", attention="vanilla").attention == "vanilla"
    assert NaclipConfig(method="naclip").attention is None


# -------------------------------------------------------------------------- class names
def test_class_names():
    voc = class_names("sclip", "voc21")
    assert len(voc) == 21 and len(voc[0]) == 26 and voc[0][0] == "sky" and voc[0][-1] == "fence"
    assert voc[15][0] == "person" and len(voc[15]) == 7
    assert voc[20] == ["television monitor", "tv monitor", "monitor", "television", "screen"]
    assert class_names("naclip", "voc21") == voc
    clear = class_names("clearclip", "voc21")
    assert len(clear) == 21 and all(len(c) == 1 for c in clear) and clear[0] == ["background"]
    assert class_names("sclip", "context60")[-1] == ["wood "]  # verbatim, as the references
    sizes = {"voc21": 21, "context60": 60, "coco_object": 81, "voc20": 20, "context59": 59,
             "coco_stuff": 171, "cityscapes": 19, "ade20k": 150}  # fmt: skip
    for m in METHODS:
        for d, k in sizes.items():
            names = class_names(m, d)
            assert len(names) == k, (m, d)
            assert all(n and all(isinstance(s, str) and s for s in n) for n in names)
    queries, qc = query_list(voc)
    assert len(queries) == len(qc) == sum(len(c) for c in voc) and qc[26] == 1
    with pytest.raises(ValueError):
        class_names("sclip", "kitti")


# -------------------------------------------------------------------------------- text
def test_query_embeddings():
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from ovseg.methods.text import OPENAI_IMAGENET_TEMPLATES, query_embeddings

    assert len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert OPENAI_IMAGENET_TEMPLATES[:3] == (
        "a bad photo of a {}.",
        "a photo of many {}.",
        "a sculpture of a {}.",
    )
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    tok = open_clip.get_tokenizer("ViT-B-16")
    templates = OPENAI_IMAGENET_TEMPLATES[:5]
    emb = query_embeddings(model, tok, ["cat", "traffic light"], templates)
    assert emb.shape == (2, 16)
    with torch.no_grad():
        for i, q in enumerate(["cat", "traffic light"]):
            f = model.encode_text(tok([t.format(q) for t in templates]))
            f = f / f.norm(dim=-1, keepdim=True)
            m = f.mean(0)
            assert torch.allclose(emb[i], m / m.norm(), atol=1e-6)
    with pytest.raises(TypeError):
        query_embeddings(model, tok, "cat", templates)
