"""SCLIP / ClearCLIP / NACLIP dense probabilities against an independent implementation.

The reference below is written from the published formulas, deliberately plain: one window
at a time, explicit per-head attention matrices, the position table resampled by an explicit
bicubic (A = -0.75) with the ``(g + 0.1) / n`` scale factor, explicit Gaussian ``Omega`` and
explicit PAMR. It shares nothing with ``ovseg.methods`` except the model weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")
cv2 = pytest.importorskip("cv2")

from ovseg.methods.config import method_config  # noqa: E402
from ovseg.methods.dense import dense_probabilities, predict_labels  # noqa: E402

MEAN = torch.tensor([122.771, 116.746, 104.094]).view(3, 1, 1)
STD = torch.tensor([68.501, 66.632, 70.323]).view(3, 1, 1)


@pytest.fixture(scope="module")
def model():
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    clip = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=3, width=64, head_width=32, patch_size=16, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    with torch.no_grad():  # livelier attention than the default init
        for blk in clip.visual.transformer.resblocks:
            blk.attn.in_proj_weight.mul_(3.0)
            blk.attn.in_proj_bias.normal_(0, 0.3)
    return clip


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    out = {}
    for h, w in [(217, 341), (500, 375)]:
        base = rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3)).astype(np.float32)
        big = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        out[(h, w)] = np.clip(big + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
    return out


QUERY_CLASS = [0, 0, 1, 2, 2, 2, 3, 5]  # class 4 has no query
NUM_CLASSES = 6


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(3)
    t = torch.randn(len(QUERY_CLASS), 32, generator=g)
    return t / t.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------- reference
def ref_resize(image, short):
    h, w = image.shape[:2]
    f = min(2048 / max(h, w), short / min(h, w))
    nh, nw = int(h * f + 0.5), int(w * f + 0.5)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def cubic_weights(t, a=-0.75):
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def ref_bicubic_matrix(n, g):
    """(g, n) matrix of torch-style bicubic resampling with scale factor (g + 0.1) / n."""
    scale = n / (g + 0.1)
    m = torch.zeros(g, n, dtype=torch.float64)
    for o in range(g):
        src = scale * (o + 0.5) - 0.5
        base = math.floor(src)
        for tap, wgt in zip(range(base - 1, base + 3), cubic_weights(src - base), strict=True):
            m[o, min(max(tap, 0), n - 1)] += wgt
    return m


def ref_pos(pos, gh, gw):
    n = int(round(math.sqrt(pos.shape[0] - 1)))
    if gh * gw == n * n:
        return pos
    table = pos[1:].reshape(n, n, -1).double()
    rows, cols = ref_bicubic_matrix(n, gh), ref_bicubic_matrix(n, gw)
    out = torch.einsum("ai,bj,ijc->abc", rows, cols, table).float().reshape(gh * gw, -1)
    return torch.cat([pos[:1], out])


def ln(x, mod):
    return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def heads_qkv(blk, x):
    attn = blk.attn
    qkv = ln(x, blk.ln_1) @ attn.in_proj_weight.T + attn.in_proj_bias
    c = x.shape[-1]
    hd = c // attn.num_heads
    split = [qkv[:, i * c : (i + 1) * c] for i in range(3)]
    return [[z[:, h * hd : (h + 1) * hd] for h in range(attn.num_heads)] for z in split]


def out_proj(blk, per_head):
    return torch.cat(per_head, dim=1) @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias


def mlp(blk, x):
    hidden = F.gelu(ln(x, blk.ln_2) @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias)
    return hidden @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias


def ref_omega(gh, gw, sigma):
    ii, jj = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ii, jj = ii.flatten().double(), jj.flatten().double()
    d2 = (ii[:, None] - ii[None]) ** 2 + (jj[:, None] - jj[None]) ** 2
    om = torch.zeros(gh * gw + 1, gh * gw + 1, dtype=torch.float64)
    om[1:, 1:] = torch.exp(-d2 / (2 * sigma**2))
    return om.float()


def ref_features(visual, window, method, sigma=5.0):
    """(3, h, w) -> (gh, gw, D) unit-norm features, one window, plain torch."""
    gh, gw = window.shape[1] // 16, window.shape[2] // 16
    patches = F.conv2d(window[None], visual.conv1.weight, stride=16)[0]
    x = torch.cat([visual.class_embedding[None], patches.flatten(1).T])
    x = ln(x + ref_pos(visual.positional_embedding, gh, gw), visual.ln_pre)
    blocks = list(visual.transformer.resblocks)
    for blk in blocks[:-1]:
        qs, ks, vs = heads_qkv(blk, x)
        s = qs[0].shape[1] ** -0.5
        att = [torch.softmax(q @ k.T * s, -1) @ v for q, k, v in zip(qs, ks, vs, strict=True)]
        x = x + out_proj(blk, att)
        x = x + mlp(blk, x)
    blk = blocks[-1]
    qs, ks, vs = heads_qkv(blk, x)
    s = qs[0].shape[1] ** -0.5
    outs = []
    for q, k, v in zip(qs, ks, vs, strict=True):
        if method == "sclip":
            a = torch.softmax(q @ q.T * s, -1) + torch.softmax(k @ k.T * s, -1)
        elif method == "clearclip":
            a = torch.softmax(q @ q.T * s, -1)
        else:
            a = torch.softmax(k @ k.T * s + ref_omega(gh, gw, sigma), -1)
        outs.append(a @ v)
    if method == "sclip":
        x = x + out_proj(blk, outs)
        x = x + mlp(blk, x)
    else:
        x = out_proj(blk, outs)
    f = (ln(x, visual.ln_post) @ visual.proj)[1:]
    f = f / f.norm(dim=-1, keepdim=True)
    return f.reshape(gh, gw, -1)


def ref_window_logits(visual, window, text, method, pad16):
    h, w = window.shape[1:]
    left = r = t = b = 0
    if pad16 and w % 16:
        left = (16 - w % 16) // 2
        r = 16 - w % 16 - left
    if pad16 and h % 16:
        t = (16 - h % 16) // 2
        b = 16 - h % 16 - t
    padded = F.pad(window, (left, r, t, b))
    feats = ref_features(visual, padded, method)
    logits = torch.einsum("ijd,qd->qij", feats, text)[None]
    up = F.interpolate(logits, size=padded.shape[1:], mode="bilinear", align_corners=False)
    return up[0, :, t : t + h, left : left + w]


def ref_pamr(img, logits, steps, dilations):
    c, h, w = img.shape
    ys, xs = torch.arange(h), torch.arange(w)
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    def nb(z, d, dy, dx):  # value at (y + dy*d, x + dx*d), coordinates clamped to the image
        yi = (ys + dy * d).clamp(0, h - 1)
        xi = (xs + dx * d).clamp(0, w - 1)
        return z[:, yi[:, None], xi[None, :]]

    taps = [nb(img, d, dy, dx) for d in dilations for dy, dx in offs]
    std = torch.stack(taps).std(dim=0)
    neigh = [(d, dy, dx) for d in dilations for dy, dx in offs if (dy, dx) != (0, 0)]
    aff = torch.stack(
        [(-(img - nb(img, d, dy, dx)).abs() / (1e-8 + 0.1 * std)).mean(0) for d, dy, dx in neigh]
    )
    aff = torch.softmax(aff, dim=0)
    for _ in range(steps):
        logits = sum(aff[i] * nb(logits, d, dy, dx) for i, (d, dy, dx) in enumerate(neigh))
    return logits


def reference_probabilities(visual, image, text, method, cfg):
    h0, w0 = image.shape[:2]
    img = torch.from_numpy(ref_resize(image, cfg.short_side)).permute(2, 0, 1).float() - MEAN
    img = img / STD
    _, h, w = img.shape
    if cfg.slide_crop is None:
        feats = ref_features(visual, img, method)
        logits = torch.einsum("ijd,qd->qij", feats, text)[None]
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    else:
        crop, stride = cfg.slide_crop, cfg.slide_stride
        total = torch.zeros(text.shape[0], h, w)
        count = torch.zeros(1, h, w)
        for i in range(max(h - crop + stride - 1, 0) // stride + 1):
            for j in range(max(w - crop + stride - 1, 0) // stride + 1):
                y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
                y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                window = img[:, y1:y2, x1:x2]
                pad16 = method == "clearclip"
                total[:, y1:y2, x1:x2] += ref_window_logits(visual, window, text, method, pad16)
                count[:, y1:y2, x1:x2] += 1
        logits = (total / count)[None]
    logits = F.interpolate(logits, size=(h0, w0), mode="bilinear", align_corners=False)[0]
    if cfg.pamr_steps:
        guide = F.interpolate(img[None], size=(h0, w0), mode="bilinear", align_corners=False)[0]
        logits = ref_pamr(guide, logits, cfg.pamr_steps, cfg.pamr_dilations)
    probs = torch.softmax(cfg.logit_scale * logits, dim=0)
    out = torch.zeros(NUM_CLASSES, h0, w0)
    for k in range(NUM_CLASSES):
        members = [q for q, c in enumerate(QUERY_CLASS) if c == k]
        if members:
            out[k] = probs[members].max(dim=0).values
    return out


CASES = [
    ("sclip", "voc21", (217, 341), {}),
    ("sclip", "context59", (500, 375), dict(short_side=280)),
    ("clearclip", "voc21", (217, 341), dict(short_side=300, slide_crop=200, slide_stride=100)),
    ("clearclip", "ade20k", (500, 375), dict(short_side=250, slide_crop=230, slide_stride=115)),
    ("naclip", "voc21", (217, 341), {}),  # whole image + PAMR
    ("naclip", "context60", (500, 375), dict(short_side=250, pamr_steps=2)),
]


@pytest.mark.parametrize(("method", "dataset", "size", "overrides"), CASES)
def test_dense_probabilities_match_reference(model, images, text, method, dataset, size, overrides):
    cfg = method_config(method, dataset, **overrides)
    ours = dense_probabilities(
        method, model.visual, images[size], text, QUERY_CLASS, NUM_CLASSES, cfg
    )
    with torch.no_grad():
        ref = reference_probabilities(model.visual, images[size], text, method, cfg)
    assert ours.shape == (NUM_CLASSES, *size) and ours.dtype == torch.float32
    assert float((ours - ref).abs().max()) <= 1e-4
    assert float(ours[4].abs().max()) == 0.0  # a class without queries
    assert 0 <= float(ours.min()) and float(ours.max()) <= 1


def ref_labels(probs, prob_thd, area_thd):
    probs = probs.clone()
    if area_thd is not None:
        pred = probs.argmax(0)
        areas = torch.tensor([float((pred == k).sum()) for k in range(1, probs.shape[0])])
        for k in range(1, probs.shape[0]):
            if not areas[k - 1] > area_thd * areas.sum():
                probs[k] = 0
    labels = probs.argmax(0)
    labels[probs.max(0).values < prob_thd] = 0
    return labels


def test_predict_labels_thresholds():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(5, 40, 50, generator=g) * 2, dim=0)
    probs[3] *= 0.2  # a rare class, removed by the area rule
    for method, dataset in [("sclip", "voc21"), ("clearclip", "voc21"), ("naclip", "context59")]:
        cfg = method_config(method, dataset)
        ours = predict_labels(probs, cfg)
        assert ours.dtype == torch.int64 and ours.shape == (40, 50)
        assert torch.equal(ours, ref_labels(probs, cfg.prob_threshold, cfg.area_threshold))
    sclip = method_config("sclip", "voc21")
    assert not (predict_labels(probs, sclip) == 3).any()
    assert (predict_labels(probs, method_config("sclip", "voc20")) == 3).any()
    with pytest.raises(ValueError, match="background_class"):
        predict_labels(probs, sclip, background_class=None)
    assert torch.equal(
        predict_labels(probs, method_config("sclip", "voc20"), background_class=None),
        probs.argmax(0),
    )


def test_dense_probabilities_validation(model, images, text):
    cfg = method_config("sclip")
    img = images[(217, 341)]
    with pytest.raises(ValueError, match="config is for"):
        dense_probabilities("naclip", model.visual, img, text, QUERY_CLASS, NUM_CLASSES, cfg)
    with pytest.raises(TypeError):
        dense_probabilities("sclip", model.visual, img.astype(np.float32), text, QUERY_CLASS,
                            NUM_CLASSES, cfg)  # fmt: skip
    with pytest.raises(ValueError, match="query_class"):
        dense_probabilities("sclip", model.visual, img, text, QUERY_CLASS[:-1], NUM_CLASSES, cfg)
    with pytest.raises(ValueError, match="query_class"):
        dense_probabilities("sclip", model.visual, img, text, QUERY_CLASS, 3, cfg)
