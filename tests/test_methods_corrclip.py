"""CorrCLIP: against an independent implementation of its published formulas on tiny random
models; regions, the vote, the Segmenter contract and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.methods.config import method_config
from ovseg.methods.regions import region_id_map, region_vote

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def models():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from ovseg.methods.dino import tiny_dino
    from ovseg.scoring.backends import OpenClipBackend

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        clip = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(
                layers=6, width=64, head_width=32, patch_size=16, image_size=64
            ),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        ).eval()
        for p in clip.visual.parameters():  # livelier than open_clip's init
            p.data.add_(0.05 * torch.randn_like(p))
    return OpenClipBackend(clip, name="tiny6"), tiny_dino(patch_size=8, seed=1)


# -- an independent CorrCLIP window, written from the published description ---------------
def _components(dist: np.ndarray, eps: float) -> np.ndarray:
    """DBSCAN with min_samples 1 = connected components of the graph dist <= eps."""
    n = len(dist)
    label = -np.ones(n, int)
    cur = 0
    for s in range(n):
        if label[s] >= 0:
            continue
        stack, label[s] = [s], cur
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(dist[i] <= eps):
                if label[j] < 0:
                    label[j] = cur
                    stack.append(j)
        cur += 1
    return label


def _nearest(ids: np.ndarray, size) -> np.ndarray:
    h, w = ids.shape
    rows = np.floor(np.arange(size[0]) * (h / size[0])).astype(int)
    cols = np.floor(np.arange(size[1]) * (w / size[1])).astype(int)
    return ids[rows][:, cols]


def _attend(blk, query, keys, mask=None):
    """One multi-head attention of ``blk`` for query tokens over key tokens (rows)."""
    a = blk.attn
    c = query.shape[-1]
    heads = a.num_heads
    w, b = a.in_proj_weight, a.in_proj_bias
    q = (blk.ln_1(query) @ w[:c].T + b[:c]).view(-1, heads, c // heads).transpose(0, 1)
    k = (blk.ln_1(keys) @ w[c : 2 * c].T + b[c : 2 * c]).view(-1, heads, c // heads)
    v = (blk.ln_1(keys) @ w[2 * c :].T + b[2 * c :]).view(-1, heads, c // heads)
    k, v = k.transpose(0, 1), v.transpose(0, 1)
    logits = q @ k.transpose(1, 2) / (c // heads) ** 0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(0, 1).reshape(-1, c)
    return a.out_proj(out)


def _block(blk, x, keys=None, mask=None):
    x = x + _attend(blk, x, x if keys is None else keys, mask)
    return x + blk.mlp(blk.ln_2(x))


def reference_window(visual, dino, crop: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    from ovseg.methods.clip_blocks import embed_tokens
    from ovseg.methods.dino import dino_last_qkv
    from ovseg.methods.proxyclip import dino_input_from_clip

    q, k, _ = dino_last_qkv(dino, dino_input_from_clip(crop))
    f = F.normalize((q + k)[0, 1:], dim=-1)
    fh, fw = crop.shape[2] // 8, crop.shape[3] // 8
    sim = f @ f.T
    cells = _nearest(ids, (fh, fw)).reshape(-1)
    values = np.unique(cells)
    group = {values[0]: 0}
    if len(values) > 2:
        means = torch.stack([f[torch.from_numpy(cells == v)].mean(0) for v in values[1:]])
        means = F.normalize(means, dim=1)
        rs = (means @ means.T).numpy()
        for v, c in zip(values[1:], _components(rs.max() - rs, 0.2), strict=True):
            group[v] = c + 1
    else:
        group.update({v: i for i, v in enumerate(values)})
    g = torch.tensor([group[v] for v in cells])
    scope = torch.zeros_like(sim, dtype=torch.bool)
    mean = sim.mean()
    for i in range(len(g)):
        for j in range(len(g)):
            if g[i] == g[j] != 0 or ((g[i] == 0 or g[j] == 0) and sim[i, j] > mean):
                scope[i, j] = True
    attn = torch.softmax(4 * sim.masked_fill(~scope, float("-inf")), -1)

    x, (gh, gw) = embed_tokens(visual, crop)
    x = x[0]
    tok_group = _nearest(g.view(fh, fw).numpy(), (gh, gw)).reshape(-1)
    blocks = visual.transformer.resblocks
    depth = len(blocks)
    tokens = {r: x[:1].clone() for r in np.unique(tok_group)}
    outputs = []
    for blk in blocks:
        for r in tokens:  # a class-token copy sees the class token and its region's patches
            keys = torch.cat([x[:1], x[1:][torch.from_numpy(tok_group == r)]])
            tokens[r] = _block(blk, tokens[r], keys)
        if blk is not blocks[-1]:
            x = _block(blk, x)
            outputs.append(x)
    spatial = torch.stack(outputs[2 : depth - 2]).mean(0)  # blocks 2 .. L-3 (L - 4 of them)
    last = blocks[-1]
    c = x.shape[-1]

    def value_path(t):
        v = last.ln_1(t) @ last.attn.in_proj_weight[2 * c :].T + last.attn.in_proj_bias[2 * c :]
        v = v[1:].T.reshape(1, c, gh, gw)
        v = F.interpolate(v, size=(fh, fw), mode="bilinear", align_corners=False)
        return last.attn.out_proj(attn @ v.reshape(c, -1).T)

    cell_token = _nearest(tok_group.reshape(gh, gw), (fh, fw)).reshape(-1)
    semantic = torch.cat([tokens[r] for r in cell_token])
    ln = visual.ln_post
    out = ln(value_path(x)) + ln(value_path(spatial)) + 0.5 * ln(semantic)
    return (out @ visual.proj).T.reshape(1, -1, fh, fw)


def _assert_cuts_clear(dino, crop: torch.Tensor, ids: np.ndarray) -> None:
    """CorrCLIP's two hard cuts are clear of rounding on this input, so that both
    implementations (and every CPU) take the same side: the DBSCAN distances of the region
    means against its radius 0.2, and every patch cosine against their mean (the scope).
    Computed in float64 from the DINO features both implementations share."""
    from ovseg.methods.dino import dino_last_qkv
    from ovseg.methods.proxyclip import dino_input_from_clip

    q, k, _ = dino_last_qkv(dino, dino_input_from_clip(crop))
    f = F.normalize((q + k)[0, 1:].double(), dim=-1)
    sim = f @ f.T
    assert (sim - sim.mean()).abs().min().item() > 1e-5
    cells = _nearest(ids, (crop.shape[2] // 8, crop.shape[3] // 8)).reshape(-1)
    values = np.unique(cells)
    if len(values) > 2:
        means = torch.stack([f[torch.from_numpy(cells == v)].mean(0) for v in values[1:]])
        rs = (F.normalize(means, dim=1) @ F.normalize(means, dim=1).T).numpy()
        assert np.abs(rs.max() - rs - 0.2).min() > 1e-3


def _image_and_regions(seed=0, h=56, w=112):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, : w // 2] //= 3  # two halves that differ
    ids = np.zeros((h, w), np.int64)
    ids[4:30, 6:50] = 7
    ids[20:56, 40:100] = 3
    ids[0:10, 100:112] = 12
    ids[40:41, 0:30] = 5  # a one-pixel-high line
    ids[h - 6, w - 7] = 9  # a single pixel
    return image, ids


@torch.inference_mode()
def test_window_matches_independent_implementation(models):
    from ovseg.methods.corrclip import corrclip_window_features
    from ovseg.methods.geometry import normalize_image

    clip, dino = models
    image, ids = _image_and_regions()
    crop = normalize_image(image)
    for variant in (ids, ids + 1, np.zeros_like(ids)):  # with 0, no 0 (quirk), no regions
        _assert_cuts_clear(dino, crop, variant)
        ours = corrclip_window_features(
            clip.model.visual, dino, crop, torch.from_numpy(variant)[None, None].float()
        )
        ref = reference_window(clip.model.visual, dino, crop, variant)
        assert ours.shape == ref.shape == (1, 32, 7, 14)
        torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)
    # the DBSCAN merging is exercised: two of these regions become one group
    from ovseg.methods.corrclip import corrclip_dino_features
    from ovseg.methods.regions import merge_regions, resize_ids

    feats, grid = corrclip_dino_features(dino, crop)
    cells = resize_ids(torch.from_numpy(ids), grid)
    merged = merge_regions(cells, feats[0])
    assert len(torch.unique(merged)) < len(torch.unique(cells)) > 2


@torch.inference_mode()
def test_probabilities_depend_on_regions_and_match_formula(models):
    from ovseg.methods.corrclip import corrclip_probabilities
    from ovseg.methods.geometry import normalize_image

    clip, dino = models
    image, ids = _image_and_regions()
    text = F.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    # one window, no resize, no padding: the map is the window's logits resized bilinearly
    cfg = method_config("corrclip", short_side=56, slide_crop=112, slide_stride=56)
    _assert_cuts_clear(dino, normalize_image(image), ids)
    probs = corrclip_probabilities(clip.model.visual, dino, image, ids, text, [0, 1, 1], 2, cfg)
    feats = F.normalize(
        reference_window(clip.model.visual, dino, normalize_image(image), ids), dim=1
    )
    logits = torch.einsum("bdhw,qd->bqhw", feats, text)
    logits = F.interpolate(logits, size=(56, 112), mode="bilinear", align_corners=False)[0]
    soft = torch.softmax(40 * logits, 0)
    expected = torch.stack([soft[0], soft[1:].amax(0)])
    torch.testing.assert_close(probs, expected, atol=1e-4, rtol=1e-4)
    other = corrclip_probabilities(
        clip.model.visual, dino, image, np.zeros_like(ids), text, [0, 1, 1], 2, cfg
    )
    assert (other - probs).abs().max() > 1e-3  # the regions matter


def test_sliding_windows_with_padding_run(models):
    from ovseg.methods.corrclip import corrclip_probabilities

    clip, dino = models
    image, ids = _image_and_regions(1, h=45, w=101)
    text = F.normalize(torch.randn(2, 32), dim=-1)
    cfg = method_config("corrclip", short_side=60, slide_crop=56, slide_stride=40)
    probs = corrclip_probabilities(clip.model.visual, dino, image, ids, text, [0, 1], 2, cfg)
    assert probs.shape == (2, 45, 101) and torch.isfinite(probs).all()
    assert ((probs >= 0) & (probs <= 1)).all()


def test_region_id_map_paints_by_area():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, :, :] = True  # largest, painted last
    masks[1, 1:4, 1:4] = True
    masks[2, 2:3, 2:6] = True  # smallest, painted first
    ids = region_id_map(masks, (6, 8))
    assert ids.dtype == np.int64
    assert (ids == 3).all()  # the largest mask overwrites everything
    masks[0] = False
    ids = region_id_map(masks, (6, 8))
    # ids by area: the empty mask 1, the 1x4 bar 2, the 3x3 square 3 (over the bar)
    assert ids[2, 2] == 3 and ids[1, 1] == 3 and ids[2, 5] == 2 and ids[0, 0] == 0
    assert (region_id_map(np.zeros((0, 6, 8), bool), (6, 8)) == 0).all()
    given = np.arange(48).reshape(6, 8).astype(np.uint16)
    assert (region_id_map(given, (6, 8)) == given).all()


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((6, 8), np.float32), TypeError),
        ([[0, 1]], TypeError),
        (np.zeros((2, 6, 9), bool), ValueError),
        (np.zeros((6, 8, 1), np.int32), ValueError),
        (np.zeros((7, 8), np.int32), ValueError),
        (-np.ones((6, 8), np.int32), ValueError),
        (np.zeros((6, 8), bool), ValueError),
    ],
)
def test_region_id_map_bad_input(bad, error):
    with pytest.raises(error):
        region_id_map(bad, (6, 8))


def test_vote_changes_only_inside_regions():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, (20, 30))
    ids = np.zeros((20, 30), np.int64)
    ids[2:9, 3:20] = 4
    ids[10:20, 0:5] = 2
    ids[15, 10:30] = 8  # a thin line
    ids[0, 29] = 6  # one pixel
    out = region_vote(labels, ids)
    assert (out[ids == 0] == labels[ids == 0]).all()
    for r in (2, 4, 6, 8):
        inside = labels[ids == r]
        counts = np.bincount(inside + 1, minlength=6)
        assert (out[ids == r] == counts.argmax() - 1).all()  # majority, smallest on ties
    tie = region_vote(np.array([[3, 1, 3, 1]]), np.array([[1, 1, 1, 1]]) * np.array([[0, 1, 1, 1]]))
    assert tie.tolist() == [[3, 1, 1, 1]]  # region {1}: labels 1, 3, 1 -> 1
    tie = region_vote(np.array([[9, 3, 1]]), np.array([[0, 5, 5]]))
    assert tie.tolist() == [[9, 1, 1]]  # a tie goes to the smallest label
    # no 0 in the map: the smallest id is left alone, as CorrCLIP's code does
    same = region_vote(labels, ids + 1)
    assert (same[ids == 0] == labels[ids == 0]).all()
    # no regions at all
    assert (region_vote(labels, np.zeros_like(ids)) == labels).all()


def test_segmenter_contract(models):
    from ovseg import UNLABELED, Segmenter

    clip, dino = models
    options = dict(short_side=56, slide_crop=112, slide_stride=56)
    seg = Segmenter(None, clip, "cpu", dino=dino, method="corrclip", **options)
    image, ids = _image_and_regions(2)
    classes = ["cat", "dog; puppy", "road"]
    probs = seg.pixel_probabilities(image, classes, masks=ids)
    assert probs.shape == (3, 56, 112) and probs.dtype == np.float32
    result = seg.segment(image, classes, masks=ids)
    labels = probs.argmax(0)
    assert (result.label_map == region_vote(labels, ids)).all()
    assert (result.label_map[ids == 0] == labels[ids == 0]).all()
    region_segments = [s for s in result.segments if s.proposal_score == 1.0]
    assert sorted(s.area for s in region_segments) == sorted(
        int((ids == r).sum()) for r in np.unique(ids)[1:]
    )
    for s in result.segments:
        assert (result.label_map[s.mask] == s.class_index).all()
    assert ((result.segment_map >= 0) == (result.label_map != UNLABELED)).all()
    # bool masks give the same map as their painted id map
    masks = np.stack([ids == r for r in (3, 7, 12, 5, 9)])
    painted = region_id_map(masks, ids.shape)
    same = seg.segment(image, classes, masks=masks)
    assert (same.label_map == seg.segment(image, classes, masks=painted).label_map).all()
    # no regions at all: the vote changes nothing
    empty = seg.segment(image, classes, masks=np.zeros((0, 56, 112), bool))
    assert (
        empty.label_map
        == seg.pixel_probabilities(image, classes, masks=np.zeros_like(ids)).argmax(0)
    ).all()


def test_segmenter_bad_input(models):
    from ovseg import Segmenter

    clip, dino = models
    seg = Segmenter(sam=None, clip=clip, dino=dino, method="corrclip", device="cpu")
    image, ids = _image_and_regions()
    with pytest.raises(ValueError, match="needs regions"):
        seg.pixel_probabilities(image, ["a", "b"])
    with pytest.raises(ValueError, match="id map must be"):
        seg.segment(image, ["a", "b"], masks=ids[:10])
    with pytest.raises(TypeError, match="dtype"):
        seg.segment(image, ["a", "b"], masks=ids.astype(float))
    with pytest.raises(ValueError, match="unknown"):
        seg.segment(image, ["a", "b"], masks=ids, tau=3)
    with pytest.raises(ValueError, match="needs a DINO"):
        Segmenter(sam=None, clip=clip, method="corrclip", device="cpu")
    other = Segmenter(sam=None, clip=clip, dino=dino, method="proxyclip", device="cpu")
    with pytest.raises(ValueError, match="masks= is for"):
        other.pixel_probabilities(image, ["a", "b"], masks=ids)


def test_reference_settings_and_names():
    from ovseg.methods.classnames import class_names

    cfg = method_config("corrclip")
    assert (cfg.short_side, cfg.slide_crop, cfg.slide_stride, cfg.logit_scale) == (
        336,
        336,
        112,
        40,
    )
    assert cfg.pad_multiple == 56 and cfg.prob_threshold == 0
    assert method_config("corrclip", "voc21").prob_threshold == 0.2
    assert method_config("corrclip", "context60").prob_threshold == 0.15
    assert method_config("corrclip", "coco_object").prob_threshold == 0.25
    city = method_config("corrclip", "cityscapes")
    assert (city.short_side, city.slide_crop, city.slide_stride) == (448, 224, 112)
    assert method_config("corrclip", "ade20k").short_side == 448
    assert class_names("corrclip", "voc21")[15] == ["people"]
    assert "bed" not in class_names("corrclip", "coco_object")[0]
    assert len(class_names("corrclip", "ade20k")) == 150


def test_metaclip_is_a_known_clip(tmp_path, monkeypatch):
    from ovseg.models.build import build_clip

    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match="ovseg weights download ViT-B-16-quickgelu/metaclip_fullcc"
    ):
        build_clip("ViT-B-16-quickgelu/metaclip_fullcc", "cpu")


def test_automatic_regions_from_sam(models):
    from ovseg import Segmenter
    from ovseg.methods.corrclip import CORRCLIP_GRID

    clip, dino = models
    options = dict(short_side=56, slide_crop=112, slide_stride=56)
    with pytest.warns(UserWarning, match="tiny random SAM"):
        seg = Segmenter("tiny-random", clip, "cpu", dino=dino, method="corrclip", **options)
        image, _ = _image_and_regions(4)
        ids = seg.method.region_map(image, seg.models)
    assert ids.shape == image.shape[:2] and ids.dtype == np.int64
    grid = seg.propose(image, **CORRCLIP_GRID)  # the same masks, painted by area
    assert (region_id_map(grid.masks, image.shape[:2]) == ids).all()
    probs = seg.pixel_probabilities(image, ["a", "b"])
    result = seg.segment(image, ["a", "b"])
    assert (result.label_map == region_vote(probs.argmax(0), ids)).all()
    assert seg.method.region_map(image, seg.models) is ids  # computed once per image
