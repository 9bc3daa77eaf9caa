"""ProxyCLIP against an independent implementation written from its published formulas.

The reference below uses plain torch with explicit matrices and per-window, per-head loops:
mmcv's rescale rule, mmseg's normalisation and window placement, ProxyCLIP's centred padding to
a multiple of 56, DINO features of the crop re-normalised with ImageNet statistics,
``S = cos``, ``(S - 1.2 mean S) * 3``, ``S < 0 -> -inf``, softmax, CLIP values resized
bilinearly to the DINO grid, ``out_proj``, ``ln_post``, ``proj``, cosine logits resized to the
padded window, averaged, resized to the image, ``softmax(40 x)`` and the max over synonyms.

``S < 0 -> -inf`` is a hard cut: where an entry of ``S`` lies within rounding of 0, the two
implementations (or two CPUs) may keep it on different sides and that attention row differs.
The comparisons therefore skip the DINO tokens whose row of ``S`` comes within ``S_TOL`` of 0
in either implementation, and every output pixel such a token reaches through the bilinear
resizes (``_spread``); they check that what is left is most of the output.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ovseg.methods.proxy_attention as proxy_attention_module
import ovseg.methods.proxyclip as proxyclip_module
from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.classnames import class_names
from ovseg.methods.config import DATASETS, method_config
from ovseg.methods.dino import DINO_ARCHS, tiny_dino
from ovseg.methods.proxyclip import (
    dino_input_from_clip,
    proxy_attention,
    proxyclip_logits,
    proxyclip_probabilities,
    proxyclip_window_features,
)

# Entries of S this close to the cut at 0 may fall on either side. The two implementations' S,
# recomputed in float64 from each one's DINO features, agree to S_AGREE (asserted; 1.4e-6
# measured with AVX-512, AVX2 and plain kernels); each rounds its own float32 S by about 2e-6.
# An entry kept by one and cut by the other is within S_AGREE + 3 x 5e-6 of 0 in both.
S_AGREE = 5e-6
S_TOL = 2e-5

CLIP_MEAN_255 = torch.tensor([122.771, 116.746, 104.094]).view(3, 1, 1)
CLIP_STD_255 = torch.tensor([68.501, 66.632, 70.323]).view(3, 1, 1)
IMNET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMNET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.fixture(scope="module")
def clip_visual():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(
                layers=3, width=64, head_width=32, patch_size=16, image_size=224
            ),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
        )
    return model.eval().visual


@pytest.fixture(scope="module")
def dino():
    return tiny_dino(patch_size=8, seed=0)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (217, 341, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:217, 0:341]
    img[(yy // 40 + xx // 60) % 2 == 0] //= 3  # blocks, so DINO's affinities have structure
    return img


@pytest.fixture(scope="module")
def queries():
    gen = torch.Generator().manual_seed(3)
    query_class = [0, 0, 0, 1, 2, 3, 3, 4]
    text = F.normalize(torch.randn(len(query_class), 32, generator=gen), dim=-1)
    return text, query_class


# ---- independent implementation -------------------------------------------------------------


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _patches(img, p):
    gh, gw = img.shape[1] // p, img.shape[2] // p
    x = img[:, : gh * p, : gw * p].reshape(3, gh, p, gw, p)
    return x.permute(1, 3, 0, 2, 4).reshape(gh * gw, 3 * p * p)


def _pos(table, gh, gw, keep):
    """(1 + N, D) table resampled to gh x gw with DINO's (g + 0.1) / sqrt(N) scale factor."""
    if keep:
        return table
    n = table.shape[0] - 1
    s = int(math.sqrt(n))
    grid = table[1:].reshape(1, s, s, -1).permute(0, 3, 1, 2)
    out = F.interpolate(
        grid, scale_factor=((gh + 0.1) / math.sqrt(n), (gw + 0.1) / math.sqrt(n)), mode="bicubic"
    )
    return torch.cat([table[:1], out[0].permute(1, 2, 0).reshape(gh * gw, -1)])


def _attend(q, k, v, heads):
    hd = q.shape[1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        outs.append(torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(hd), dim=-1) @ v[:, sl])
    return torch.cat(outs, dim=1)


def _dino_feats(sd, heads, img):
    """Final-norm DINO patch tokens (N, C) and the grid of one ImageNet-normalised image."""
    p = sd["patch_embed.proj.weight"].shape[-1]
    c = sd["cls_token"].shape[-1]
    gh, gw = img.shape[1] // p, img.shape[2] // p
    x = _patches(img, p) @ sd["patch_embed.proj.weight"].reshape(c, -1).T
    x = torch.cat([sd["cls_token"][0], x + sd["patch_embed.proj.bias"]])
    n = sd["pos_embed"].shape[1] - 1
    x = x + _pos(sd["pos_embed"][0], gh, gw, gh * gw == n and img.shape[1] == img.shape[2])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        g = {k[len(f"blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        qkv = _ln(x, g["norm1.weight"], g["norm1.bias"], 1e-6) @ g["attn.qkv.weight"].T
        qkv = qkv + g["attn.qkv.bias"]
        y = _attend(qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :], heads)
        x = x + y @ g["attn.proj.weight"].T + g["attn.proj.bias"]
        y = _ln(x, g["norm2.weight"], g["norm2.bias"], 1e-6) @ g["mlp.fc1.weight"].T
        y = F.gelu(y + g["mlp.fc1.bias"]) @ g["mlp.fc2.weight"].T + g["mlp.fc2.bias"]
        x = x + y
    return _ln(x, sd["norm.weight"], sd["norm.bias"], 1e-6)[1:], (gh, gw)


def _clip_window(visual, dino_sd, dino_heads, crop, beta=1.2, gamma=3.0, record=None):
    """ProxyCLIP's projected features (Nd, D) and DINO grid of one CLIP-normalised crop; the
    DINO features (Nd, C) are appended to ``record`` when given."""
    sd = {k: v.detach() for k, v in visual.state_dict().items()}
    p = sd["conv1.weight"].shape[-1]
    c = sd["class_embedding"].shape[0]
    heads = visual.transformer.resblocks[0].attn.num_heads
    gh, gw = crop.shape[1] // p, crop.shape[2] // p
    x = torch.cat(
        [sd["class_embedding"][None], _patches(crop, p) @ sd["conv1.weight"].reshape(c, -1).T]
    )
    table = sd["positional_embedding"]
    x = x + _pos(table, gh, gw, gh * gw == table.shape[0] - 1)
    x = _ln(x, sd["ln_pre.weight"], sd["ln_pre.bias"], 1e-5)
    n_blocks = len(visual.transformer.resblocks)
    for i in range(n_blocks):
        g = {
            k[len(f"transformer.resblocks.{i}.") :]: v
            for k, v in sd.items()
            if k.startswith(f"transformer.resblocks.{i}.")
        }
        y = _ln(x, g["ln_1.weight"], g["ln_1.bias"], 1e-5)
        qkv = y @ g["attn.in_proj_weight"].T + g["attn.in_proj_bias"]
        if i < n_blocks - 1:
            a = _attend(qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :], heads)
            x = x + a @ g["attn.out_proj.weight"].T + g["attn.out_proj.bias"]
            y = _ln(x, g["ln_2.weight"], g["ln_2.bias"], 1e-5) @ g["mlp.c_fc.weight"].T
            y = F.gelu(y + g["mlp.c_fc.bias"]) @ g["mlp.c_proj.weight"].T + g["mlp.c_proj.bias"]
            x = x + y
            continue
        # last block: ProxyCLIP's proxy attention on the values only
        v = qkv[1:, 2 * c :]
        dino_img = (crop * torch.tensor(OPENAI_STD).view(3, 1, 1)) + torch.tensor(OPENAI_MEAN).view(
            3, 1, 1
        )
        dino_img = (dino_img - IMNET_MEAN) / IMNET_STD
        f, (hd_, wd_) = _dino_feats(dino_sd, dino_heads, dino_img)
        if record is not None:
            record.append(f)
        f = f / f.norm(dim=1, keepdim=True)
        s = f @ f.T
        s = (s - beta * s.mean()) * gamma
        s[s < 0] = float("-inf")
        attn = torch.softmax(s, dim=1)
        hd = c // heads
        outs = []
        for h in range(heads):
            vh = v[:, h * hd : (h + 1) * hd].T.reshape(1, hd, gh, gw)
            vh = F.interpolate(vh, size=(hd_, wd_), mode="bilinear", align_corners=False)
            outs.append(attn @ vh[0].reshape(hd, -1).T)
        out = torch.cat(outs, dim=1) @ g["attn.out_proj.weight"].T + g["attn.out_proj.bias"]
        out = _ln(out, sd["ln_post.weight"], sd["ln_post.bias"], 1e-5) @ sd["proj"]
        return out, (hd_, wd_)


def _windows(h0, w0, short, crop, stride):
    """The reference's resized size and its windows ``(y1, y2, x1, x2, top, left, ph, pw)``
    (``top``/``left`` the centred padding, ``ph``/``pw`` its total per axis)."""
    f = min(2048 / max(h0, w0), short / min(h0, w0))
    nh, nw = int(h0 * f + 0.5), int(w0 * f + 0.5)
    boxes = []
    for i in range(max(nh - crop + stride - 1, 0) // stride + 1):
        for j in range(max(nw - crop + stride - 1, 0) // stride + 1):
            y2, x2 = min(i * stride + crop, nh), min(j * stride + crop, nw)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            ph, pw = (-(y2 - y1)) % 56, (-(x2 - x1)) % 56
            boxes.append((y1, y2, x1, x2, ph // 2, pw // 2, ph, pw))
    return (nh, nw), boxes


def _reference_probabilities(
    visual, dino_model, image, text, query_class, k, short, crop, stride, record=None
):
    h0, w0 = image.shape[:2]
    (nh, nw), boxes = _windows(h0, w0, short, crop, stride)
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = (torch.from_numpy(img).permute(2, 0, 1).float() - CLIP_MEAN_255) / CLIP_STD_255
    dino_sd = {kk: v.detach() for kk, v in dino_model.state_dict().items()}
    heads = dino_model.blocks[0].attn.num_heads
    q = text.shape[0]
    acc = torch.zeros(q, nh, nw)
    cnt = torch.zeros(1, nh, nw)
    for y1, y2, x1, x2, top, left, ph, pw in boxes:
        win = x[:, y1:y2, x1:x2]
        hh, ww = win.shape[1:]
        padded = torch.zeros(3, hh + ph, ww + pw)
        padded[:, top : top + hh, left : left + ww] = win
        feats, (gh, gw) = _clip_window(visual, dino_sd, heads, padded, record=record)
        logits = (feats / feats.norm(dim=1, keepdim=True)) @ text.T  # (Nd, Q)
        logits = logits.T.reshape(1, q, gh, gw)
        up = F.interpolate(logits, size=(hh + ph, ww + pw), mode="bilinear")
        acc[:, y1:y2, x1:x2] += up[0, :, top : top + hh, left : left + ww]
        cnt[:, y1:y2, x1:x2] += 1
    logits = F.interpolate((acc / cnt)[None], size=(h0, w0), mode="bilinear")[0]
    probs = torch.softmax(40.0 * logits, dim=0)
    out = torch.zeros(k, h0, w0)
    for cls in range(k):
        rows = [r for r, qc in enumerate(query_class) if qc == cls]
        if rows:
            out[cls] = probs[rows].max(dim=0).values
    return out


def _proxy_s(feats, beta=1.2, gamma=3.0):
    """ProxyCLIP's ``S`` before the cut, in float64, from DINO features (N, C)."""
    f = feats.double()
    f = f / f.norm(dim=1, keepdim=True)
    s = f @ f.T
    return (s - beta * s.mean()) * gamma


def _near_cut_rows(ours, ref):
    """Per token, whether its row of ``S`` comes within ``S_TOL`` of 0 in either
    implementation's features (N, C); asserts the two agree to ``S_AGREE``."""
    s_ours, s_ref = _proxy_s(ours), _proxy_s(ref)
    assert (s_ours - s_ref).abs().max().item() < S_AGREE
    return ((s_ours.abs() <= S_TOL) | (s_ref.abs() <= S_TOL)).any(dim=1)


def _spread(flags, grids, h0, w0, short, crop, stride):
    """Output pixels (h0, w0) that any flagged token (one bool (gh * gw,) per window) reaches:
    the flags pushed through the reference's resizes, where every weight is >= 0."""
    (nh, nw), boxes = _windows(h0, w0, short, crop, stride)
    acc = torch.zeros(1, nh, nw)
    for (y1, y2, x1, x2, top, left, ph, pw), flag, (gh, gw) in zip(
        boxes, flags, grids, strict=True
    ):
        m = flag.float().reshape(1, 1, gh, gw)
        up = F.interpolate(m, size=(y2 - y1 + ph, x2 - x1 + pw), mode="bilinear")
        acc[:, y1:y2, x1:x2] += up[0, :, top : top + y2 - y1, left : left + x2 - x1]
    return F.interpolate(acc[None], size=(h0, w0), mode="bilinear")[0, 0] > 0


@pytest.fixture()
def ours_dino_features(monkeypatch):
    """The DINO feature maps ovseg's ProxyCLIP attends with, one (C, gh, gw) per window in
    call order (recorded at ``proxy_attention``)."""
    seen = []
    original = proxy_attention_module.proxy_attention

    def recording(features, *args, **kwargs):
        seen.extend(features.detach().clone())
        return original(features, *args, **kwargs)

    monkeypatch.setattr(proxy_attention_module, "proxy_attention", recording)
    return seen


# ---- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "crop", "stride"),
    [(336, 336, 112), (150, 100, 50)],  # the default; and windows padded 100 -> 112
)
def test_probabilities_match_independent_implementation(
    clip_visual, dino, image, queries, ours_dino_features, short, crop, stride
):
    text, query_class = queries
    got = proxyclip_probabilities(
        clip_visual, dino, image, text, query_class, 5, short, crop, stride, 40.0
    )
    ref_dino = []
    want = _reference_probabilities(
        clip_visual, dino, image, text, query_class, 5, short, crop, stride, record=ref_dino
    )
    assert got.shape == (5, 217, 341) and got.dtype == torch.float32
    assert not torch.isnan(got).any()
    assert 0.0 <= got.min().item() and got.max().item() <= 1.0
    # the windows in the same order, the same DINO features; then where S is clear of its cut
    assert len(ours_dino_features) == len(ref_dino)
    flags, grids = [], []
    for fmap, ref in zip(ours_dino_features, ref_dino, strict=True):
        ours = fmap.flatten(1).T  # (C, gh, gw) -> (N, C)
        assert (ours - ref).abs().max().item() < 1e-4
        flags.append(_near_cut_rows(ours, ref))
        grids.append(tuple(fmap.shape[1:]))
    tainted = _spread(flags, grids, 217, 341, short, crop, stride)
    assert tainted.float().mean().item() <= 0.25  # most pixels stay well-conditioned
    clear = ~tainted.expand_as(got)
    assert (got - want)[clear].abs().max().item() <= 1e-4


def test_window_features_match_and_batch(clip_visual, dino, ours_dino_features):
    gen = torch.Generator().manual_seed(1)
    crops = torch.randn(2, 3, 112, 112, generator=gen)
    feats = proxyclip_window_features(clip_visual, dino, crops)
    assert feats.shape == (2, 32, 14, 14) and feats.dtype == torch.float32
    dino_sd = {k: v.detach() for k, v in dino.state_dict().items()}
    for b in range(2):
        ref_dino = []
        ref, grid = _clip_window(clip_visual, dino_sd, 2, crops[b], record=ref_dino)
        assert grid == (14, 14)
        # the mean of S is per crop: batching does not change a window's numbers
        alone = proxyclip_window_features(clip_visual, dino, crops[b : b + 1])
        batched, single = (f.flatten(1).T for f in (ours_dino_features[b], ours_dino_features[-1]))
        near = _near_cut_rows(batched, ref_dino[0]) | _near_cut_rows(single, ref_dino[0])
        assert near.float().mean().item() <= 0.1  # tokens whose row of S is near the cut
        got = feats[b].flatten(1).T  # (N, D)
        assert (got - ref)[~near].abs().max().item() < 1e-4
        assert (alone[0].flatten(1).T - got)[~near].abs().max().item() < 1e-5


def test_non_square_windows_use_each_side(clip_visual, dino, ours_dino_features):
    """ProxyCLIP's code fails on non-square windows; ovseg takes each side's own grid."""
    gen = torch.Generator().manual_seed(2)
    crop = torch.randn(1, 3, 56, 112, generator=gen)
    feats = proxyclip_window_features(clip_visual, dino, crop)
    assert feats.shape == (1, 32, 7, 14)
    dino_sd = {k: v.detach() for k, v in dino.state_dict().items()}
    ref_dino = []
    ref, grid = _clip_window(clip_visual, dino_sd, 2, crop[0], record=ref_dino)
    assert grid == (7, 14)
    near = _near_cut_rows(ours_dino_features[0].flatten(1).T, ref_dino[0])
    assert near.float().mean().item() <= 0.1
    assert (feats[0].flatten(1).T - ref)[~near].abs().max().item() < 1e-4


def test_proxy_attention_formula():
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 6, 3, 4, generator=gen)
    attn = proxy_attention(feats, beta=1.2, gamma=3.0)
    assert attn.shape == (2, 12, 12)
    for b in range(2):
        f = feats[b].reshape(6, 12)
        f = f / f.norm(dim=0, keepdim=True)
        s = f.T @ f
        s = (s - 1.2 * s.mean()) * 3.0
        want = torch.where(s < 0, torch.zeros_like(s), torch.exp(s - s.max(dim=1).values[:, None]))
        want = want / want.sum(dim=1, keepdim=True)
        assert (attn[b] - want).abs().max().item() < 1e-6
        assert torch.equal(attn[b] == 0, s < 0)


def test_dino_input_from_clip():
    img = np.random.default_rng(5).integers(0, 256, (3, 10, 12)).astype(np.float32)
    pixels = torch.from_numpy(img)[None]
    clip_norm = (pixels - CLIP_MEAN_255) / CLIP_STD_255
    got = dino_input_from_clip(clip_norm)
    want = (pixels / 255.0 - IMNET_MEAN) / IMNET_STD  # up to the 0-255 vs 0-1 constants
    assert (got - want).abs().max().item() < 1e-3
    zero = dino_input_from_clip(torch.zeros(1, 3, 2, 2))  # padding = the CLIP mean colour
    expect = (torch.tensor(OPENAI_MEAN).view(3, 1, 1) - IMNET_MEAN) / IMNET_STD
    assert torch.allclose(zero[0], expect.expand(3, 2, 2))


def test_logits_and_whole_image(clip_visual, dino, queries):
    text, query_class = queries
    img = np.random.default_rng(6).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    logits = proxyclip_logits(clip_visual, dino, img, text, 112, None)
    assert logits.shape == (8, 120, 120) and logits.abs().max().item() <= 1.0 + 1e-5
    probs = proxyclip_probabilities(clip_visual, dino, img, text, query_class, 6, 112, None)
    assert probs.shape == (6, 120, 120)
    assert torch.equal(probs[5], torch.zeros(120, 120))  # a class without queries
    full = torch.softmax(40 * logits, dim=0)
    assert torch.allclose(probs[0], full[:3].max(dim=0).values, atol=1e-6)


def test_the_method_runs_its_front_with_its_settings(clip_visual, dino, queries):
    """ProxyClip.query_probabilities is proxyclip_probabilities with its config's settings."""
    from types import SimpleNamespace

    from ovseg.methods.proxyclip import ProxyClip

    text, query_class = queries
    img = np.random.default_rng(7).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    cfg = method_config("proxyclip", "voc21", short_side=112, slide_crop=112, slide_stride=56)
    direct = proxyclip_probabilities(clip_visual, dino, img, text, query_class, 5, 112, 112, 56)
    clip = SimpleNamespace(model=SimpleNamespace(visual=clip_visual), mean=None, std=None)
    method = ProxyClip()
    method.clip_visual = lambda models: clip_visual  # the bare tower (no backend here)
    method.mean_std = lambda models: (None, None)
    models = SimpleNamespace(clip=clip, dino=dino)
    got = method.query_probabilities(img, text, list(query_class), 5, models, cfg)
    assert torch.equal(got, direct)


def test_configs_and_class_names():
    assert set(DATASETS) == {
        "voc21",
        "context60",
        "coco_object",
        "voc20",
        "context59",
        "coco_stuff",
        "cityscapes",
        "ade20k",
    }
    cfg = {name: method_config("proxyclip", name) for name in DATASETS}
    base = method_config("proxyclip")  # segmentor defaults and configs/base_config.py
    assert (base.short_side, base.long_cap) == (336, 2048)
    assert (base.slide_crop, base.slide_stride, base.pad_multiple) == (336, 112, 56)
    assert (base.logit_scale, base.prob_threshold) == (40.0, 0.0)
    assert (base.beta, base.gamma, base.batch_windows) == (1.2, 3.0, 4)
    assert (cfg["voc21"].short_side, cfg["voc21"].slide_crop) == (336, 336)
    assert cfg["voc21"].slide_stride == 112 and cfg["voc21"].pad_multiple == 56
    assert cfg["voc21"].prob_threshold == 0.2 and cfg["context60"].prob_threshold == 0.15
    assert cfg["coco_object"].prob_threshold == 0.25 and cfg["ade20k"].prob_threshold == 0
    assert (cfg["cityscapes"].short_side, cfg["cityscapes"].slide_crop) == (448, 224)
    assert cfg["ade20k"].short_side == 448 and cfg["coco_stuff"].short_side == 336
    assert all(c.logit_scale == 40.0 for c in cfg.values())
    # The reference models are documentation (the module docstring), not settings.
    doc = proxyclip_module.__doc__
    assert '"dino_vitb8"' in doc and '"ViT-B-16/openai"' in doc and "dino_vitb8" in DINO_ARCHS
    assert method_config("proxyclip", "voc21", logit_scale=50.0).logit_scale == 50.0
    assert cfg["voc21"].logit_scale == 40.0

    counts = {
        "voc21": 21,
        "context60": 60,
        "coco_object": 81,
        "voc20": 20,
        "context59": 59,
        "coco_stuff": 171,
        "cityscapes": 19,
        "ade20k": 150,
    }
    for name, n in counts.items():
        assert len(class_names("proxyclip", name)) == n, name
    voc = class_names("proxyclip", "voc21")
    assert len(voc[0]) == 26 and voc[0][:3] == ["sky", "wall", "tree"] and voc[0][-1] == "fence"
    assert voc[15] == ["person"] and voc[20] == ["tvmonitor"]
    # verbatim, as ProxyCLIP reads it
    assert class_names("proxyclip", "context60")[-1] == ["wood "]
    obj = class_names("proxyclip", "coco_object")
    assert len(obj[0]) == 17 and "bed" in obj[0] and obj[1] == ["person"]


def test_bad_arguments(clip_visual, dino, image, queries):
    text, qc = queries
    with pytest.raises(ValueError):
        proxyclip_window_features(clip_visual, dino, torch.zeros(3, 112, 112))
    with pytest.raises(TypeError):
        proxyclip_window_features(clip_visual, dino, torch.zeros(1, 3, 112, 112).long())
    with pytest.raises(ValueError):
        proxyclip_window_features(clip_visual, dino, torch.zeros(1, 3, 112, 112), beta=math.nan)
    with pytest.raises(TypeError):
        proxyclip_window_features(clip_visual, torch.nn.Linear(2, 2), torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError):
        proxyclip_window_features(torch.nn.Linear(2, 2), dino, torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError):
        proxyclip_probabilities(clip_visual, dino, image.astype(np.float32), text, qc, 5)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image[..., :2], text, qc, 5)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, [0, 1], 5)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, [9] * len(qc), 5)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, qc, 0)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, qc, 5, 336, 112, 224)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, qc, 5, logit_scale=-1.0)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, qc, 5, short_side=0)
    with pytest.raises(ValueError):
        proxyclip_probabilities(clip_visual, dino, image, text, qc, 5, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        class_names("proxyclip", "voc")
    with pytest.raises(ValueError):
        method_config("proxyclip", "kitti")
    with pytest.raises(ValueError):
        method_config("proxyclip", "voc21", crop=3)
