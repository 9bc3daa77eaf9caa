"""Trident against an independent implementation written from its published formulas.

The reference below is plain torch on tiny random models: mmcv's rescale, mmseg's
normalisation, Trident's stretch to multiples of the patch, windows with DINO features
re-normalised with ImageNet statistics, ``S = cos`` with one mean over every window,
``(S - 1.2 mean) * 3``, ``S < 0 -> -inf``, softmax, CLIP values (class token dropped) resized to
DINO's grid, ``out_proj``; windows averaged into the whole grid, resized to SAM's valid grid;
SAM's full last-block attention (relative positions from ``segment_anything`` itself), cropped,
filtered by the value cosine against ``cos_fac`` times its mean (capped at 0.9, 0.6 for negative
thresholds without ``refine_neg_cos``), averaged over heads, renormalised; ``ln_post``,
``proj``, cosine logits resized to the image. The refinement is checked against the rule of
``sam_refinement`` applied to the prompts and masks SAM actually returned.

Both cuts are hard: an entry within rounding of one may fall on either side in the two
implementations (or on two CPUs). ``S < 0`` feeds every output pixel through SAM's aggregation,
so the DINO seeds are chosen to keep every entry of ``S`` at least ``DINO_MARGIN`` from 0 (and
the test asserts it). ``sim > t`` acts per SAM token: the logits are compared away from the
tokens whose row comes within ``SAM_TOL`` of its threshold in either implementation.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conditioning import assert_labels_are_argmax

from ovseg.methods.config import method_config
from ovseg.methods.dino import tiny_dino
from ovseg.methods.trident import clip_input_size, sam_guides, trident_logits
from ovseg.methods.trident_refine import trident_refine
from ovseg.models.tiny import tiny_clip, tiny_sam
from ovseg.proposals.sam import Proposer

MEAN255 = torch.tensor([122.771, 116.746, 104.094]).view(1, 3, 1, 1)
STD255 = torch.tensor([68.501, 66.632, 70.323]).view(1, 3, 1, 1)
CLIP01 = (torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1),
          torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1))  # fmt: skip
IMNET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
         torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))  # fmt: skip
OPTS = dict(short_side=80, slide_crop=64, slide_stride=32)
# |S| of every DINO entry, in both implementations (float64 from each one's features). Both
# compute S from the same DINO code and agree to ~1e-7; each rounds its float32 S by ~2e-6.
DINO_MARGIN = 3e-5
# SAM's value cosines against their thresholds: both implementations agree to SAM_AGREE
# (asserted); an entry on different sides in the two is within SAM_AGREE + 3 x 5e-6 of it.
SAM_AGREE = 5e-6
SAM_TOL = 2e-5


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    sam = tiny_sam()
    with torch.no_grad():  # non-zero relative positions, so they matter
        for blk in sam.image_encoder.blocks:
            blk.attn.rel_pos_h.normal_(0, 0.3)
            blk.attn.rel_pos_w.normal_(0, 0.3)
    return tiny_clip().visual, sam


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    img = cv2.resize((rng.random((12, 20, 3)) * 255).astype(np.uint8), (200, 120))
    return img


def _sam_attention(sam, img16):
    """Full (heads, N, N) attention and (heads, N, hd) values of the last block, on the valid
    grid, via SAM's own predictor and relative-position helper."""
    from segment_anything import SamPredictor
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    seen = []
    blk = sam.image_encoder.blocks[-1]
    hook = blk.attn.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    pred = SamPredictor(sam)
    pred.set_image(img16)
    hook.remove()
    x = seen[0]
    b, gh, gw, _ = x.shape
    a = blk.attn
    qkv = a.qkv(x).reshape(b, gh * gw, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * a.num_heads, gh * gw, -1).unbind(0)
    attn = (q * a.scale) @ k.transpose(-2, -1)
    attn = add_decomposed_rel_pos(attn, q, a.rel_pos_h, a.rel_pos_w, (gh, gw), (gh, gw))
    attn = attn.softmax(-1)
    vh, vw = pred.input_size[0] // 16, pred.input_size[1] // 16
    attn = attn.view(-1, gh, gw, gh, gw)[:, :vh, :vw, :vh, :vw].reshape(-1, vh * vw, vh * vw)
    v = v.view(-1, gh, gw, v.shape[-1])[:, :vh, :vw].reshape(-1, vh * vw, v.shape[-1])
    return attn, v, (vh, vw)


def _reference(visual, dino, sam, image, text, cos_fac=1.2, neg=True, halves=False, record=None):
    """Trident's logits (Q, H, W); ``record`` (a dict) receives the DINO feature maps of the
    windows (``"dino"``) and SAM's values per part (``"sam_values"``, (heads, n, hd))."""
    from ovseg.methods.clip_blocks import tokens_before_last_block
    from ovseg.methods.dino import dino_feature_map

    h0, w0 = image.shape[:2]
    s = min(2048 / max(h0, w0), OPTS["short_side"] / min(h0, w0))
    nh, nw = int(h0 * s + 0.5), int(w0 * s + 0.5)
    x = torch.from_numpy(cv2.resize(image, (nw, nh))).permute(2, 0, 1).float()[None]
    x = (x - MEAN255) / STD255
    longer = max(nh, nw)
    dst = (longer // 16 + 1) * 16 if longer % 16 else longer
    hh, ww = int(nh * dst / longer), int(nw * dst / longer)
    hh, ww = max(-(-hh // 16) * 16, 64), max(-(-ww // 16) * 16, 64)
    x = F.interpolate(x, (hh, ww), mode="bilinear", align_corners=False)
    wins = []
    for i in range(max(hh - 64 + 31, 0) // 32 + 1):
        for j in range(max(ww - 64 + 31, 0) // 32 + 1):
            y2, x2 = min(i * 32 + 64, hh), min(j * 32 + 64, ww)
            wins.append((y2 - 64, y2, x2 - 64, x2))
    feats, sims = [], []
    for y1, y2, x1, x2 in wins:
        crop = x[:, :, y1:y2, x1:x2]
        f = dino_feature_map(dino, ((crop * CLIP01[1] + CLIP01[0]) - IMNET[0]) / IMNET[1])
        fn = F.normalize(f.flatten(2)[0], dim=0)
        feats.append(f)
        sims.append(fn.T @ fn)
    mean_s = torch.stack(sims).mean()
    if record is not None:
        record["dino"], record["sam_values"] = feats, []
    pd = dino.patch_embed.patch_size[0]
    blk = visual.transformer.resblocks[-1]
    width, heads = visual.transformer.width, blk.attn.num_heads
    grid = torch.zeros(width, hh // pd, ww // pd)
    count = torch.zeros(1, hh // pd, ww // pd)
    for (y1, y2, x1, x2), f, sim in zip(wins, feats, sims, strict=True):
        tok, (gh, gw) = tokens_before_last_block(visual, x[:, :, y1:y2, x1:x2])
        v = blk.ln_1(tok[0, 1:]) @ blk.attn.in_proj_weight[2 * width :].T
        v = v + blk.attn.in_proj_bias[2 * width :]
        sim = (sim - 1.2 * mean_s) * 3.0
        a = torch.softmax(sim.masked_fill(sim < 0, float("-inf")), -1)
        outs = []
        for hd in range(heads):
            vh = v[:, hd * (width // heads) : (hd + 1) * (width // heads)]
            vh = vh.T.reshape(1, -1, gh, gw)
            vh = F.interpolate(vh, f.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(a @ vh.flatten(2)[0].T)
        o = blk.attn.out_proj(torch.cat(outs, 1))
        grid[:, y1 // pd : y2 // pd, x1 // pd : x2 // pd] += o.T.reshape(width, *f.shape[-2:])
        count[:, y1 // pd : y2 // pd, x1 // pd : x2 // pd] += 1
    grid = grid / count
    img16 = cv2.resize(image, (-(-w0 // 16) * 16, -(-h0 // 16) * 16))
    parts, gparts = [img16], [grid]
    if halves:
        hw, gw2 = img16.shape[1] // 2, grid.shape[2] // 2
        parts = [img16[:, :hw], img16[:, hw:]]
        gparts = [grid[:, :, :gw2], grid[:, :, gw2:]]
    maps = []
    for part, g in zip(parts, gparts, strict=True):
        attn, v, (vh, vw) = _sam_attention(sam, np.ascontiguousarray(part))
        if record is not None:
            record["sam_values"].append(v)
        g = F.interpolate(g[None], (vh, vw), mode="bilinear", align_corners=False)[0]
        vn = F.normalize(v, dim=-1)
        sim = vn @ vn.transpose(1, 2)
        t = cos_fac * sim.mean(0, keepdim=True).mean(-1, keepdim=True)
        if not neg:
            t = torch.where(t < 0, 0.6, t)
        t = torch.clamp(t, max=0.9)
        kept = torch.where(sim > t, attn, 0.0).mean(0)
        kept = kept / kept.sum(-1, keepdim=True)
        maps.append((kept @ g.flatten(1).T).T.reshape(width, vh, vw))
    agg = torch.cat(maps, 2)
    feat = F.normalize(visual.ln_post(agg.flatten(1).T) @ visual.proj, dim=-1)
    logits = (feat @ text.T).T.reshape(-1, *agg.shape[1:])
    return F.interpolate(logits[None], (h0, w0), mode="bilinear", align_corners=False)[0]


def _dino_s(feature_maps):
    """Trident's S in float64 for all windows: (W, N, N), one mean over every window."""
    f = torch.cat([F.normalize(m.double().flatten(2), dim=1) for m in feature_maps])
    sim = f.transpose(1, 2) @ f
    return (sim - 1.2 * sim.mean()) * 3.0


def _sam_cut_distance(values, cos_fac, neg):
    """|sim - t| of Trident's SAM filter in float64: values (heads, n, hd) -> (heads, n, n)."""
    vn = F.normalize(values.double(), dim=-1)
    sim = vn @ vn.transpose(1, 2)
    t = cos_fac * sim.mean(0, keepdim=True).mean(-1, keepdim=True)
    if not neg:
        t = torch.where(t < 0, 0.6, t)
    return sim - torch.clamp(t, max=0.9)


def _guide_values(guide):
    """SAM's last-block values (heads, n, hd) on a guide's valid grid, in float64."""
    blk, x = guide.block, guide.block_input.double()
    a = blk.attn
    y = F.layer_norm(x, blk.norm1.normalized_shape, blk.norm1.weight.double(),
                     blk.norm1.bias.double(), blk.norm1.eps)  # fmt: skip
    qkv = F.linear(y, a.qkv.weight.double(), a.qkv.bias.double())
    _, gh, gw, c = x.shape
    v = qkv.reshape(gh, gw, 3, a.num_heads, -1)[:, :, 2].permute(2, 0, 1, 3)
    vh, vw = guide.valid
    return v[:, :vh, :vw].reshape(a.num_heads, vh * vw, -1)


@pytest.mark.parametrize(
    "dino_patch, dino_seed, cos_fac, neg, halves",
    [(16, 1, 1.2, True, False), (8, 9, 0.0, True, False), (16, 1, 3.0, False, False),
     (16, 1, 1.2, False, True)],
)  # fmt: skip
def test_logits_equal_independent_formulas(
    models, image, monkeypatch, dino_patch, dino_seed, cos_fac, neg, halves
):
    import ovseg.methods.trident as trident_module

    visual, sam = models
    dino = tiny_dino(patch_size=dino_patch, seed=dino_seed)
    text = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    config = method_config("trident", cos_fac=cos_fac, refine_neg_cos=neg, sam_halves=halves,
                           batch_windows=3, **OPTS)  # fmt: skip
    proposer = Proposer(sam)
    ours_dino = []  # the DINO feature maps ovseg's Trident computes, per batch of windows
    original = trident_module.dino_window_features

    def recording(*args, **kwargs):
        ours_dino.append(original(*args, **kwargs))
        return ours_dino[-1]

    monkeypatch.setattr(trident_module, "dino_window_features", recording)
    record = {}
    with torch.no_grad():
        guides = sam_guides(proposer, image, config, visual)
        ours = trident_logits(visual, dino, guides, image, text, config)
        ref = _reference(visual, dino, sam, image, text, cos_fac, neg, halves, record)
        # S: the same in both, and clear of its cut everywhere (the seeds are chosen for it)
        s_ours, s_ref = _dino_s(ours_dino), _dino_s(record["dino"])
        assert (s_ours - s_ref).abs().max().item() < 1e-5
        assert min(s_ours.abs().min().item(), s_ref.abs().min().item()) > DINO_MARGIN
        # SAM's filter: tokens whose row comes near its threshold, spread to the pixels
        near = []
        for guide, v_ref in zip(guides, record["sam_values"], strict=True):
            d_ours = _sam_cut_distance(_guide_values(guide), cos_fac, neg)
            d_ref = _sam_cut_distance(v_ref, cos_fac, neg)
            assert (d_ours - d_ref).abs().max().item() < SAM_AGREE
            rows = ((d_ours.abs() <= SAM_TOL) | (d_ref.abs() <= SAM_TOL)).any(-1).any(0)
            near.append(rows.reshape(guide.valid))
    grid = torch.cat(near, dim=1).float()[None, None]
    tainted = F.interpolate(grid, image.shape[:2], mode="bilinear", align_corners=False)[0, 0] > 0
    assert tainted.float().mean().item() <= 0.2
    assert ours.shape == (5, *image.shape[:2])
    torch.testing.assert_close(ours[:, ~tainted], ref[:, ~tainted], atol=2e-5, rtol=1e-4)
    assert proposer.encoder_calls == (3 if halves else 1)


def test_clip_input_size():
    assert clip_input_size(448, 597, 16, 336) == (464, 608)  # long side to 608, short follows
    assert clip_input_size(720, 960, 16, 336) == (720, 960)  # multiples of 16: unchanged
    assert clip_input_size(448, 2048, 16, 336) == (448, 2048)
    assert clip_input_size(100, 150, 16, 336) == (336, 336)  # at least one window


class _Spy:
    """A SamPredictor whose predict_torch calls are recorded."""

    def __init__(self, predictor):
        self.p, self.calls = predictor, []

    def __getattr__(self, name):
        return getattr(self.p, name)

    def predict_torch(self, **kw):
        out = self.p.predict_torch(**kw)
        self.calls.append((kw, out))
        return out


def _expected(probs, labels, spy, thresh, shape):
    """``sam_refinement``'s class scores (K, H, W) from the prompts' outputs (0 where no kept
    mask covers a pixel); its labels are their argmax there, the coarse labels elsewhere."""
    k = probs.shape[0]
    scores = torch.zeros_like(probs)
    for c, (_, (_, ious, low)) in enumerate(spy.calls_by_class):
        keep = ious[:, 0] > thresh
        if not keep.any():
            continue
        lg = spy.p.model.postprocess_masks(low[keep], spy.p.input_size, spy.p.original_size)
        lg = F.interpolate(lg, shape, mode="bilinear", align_corners=False)[:, 0]
        s = (lg.sigmoid() * probs[c]).max(0).values * (lg > 0).any(0)
        scores[c] = s
    del k
    return scores


def _regions_case(h=96, w=128):
    """Coarse labels with odd shapes: an L, a ring, two blocks touching at one corner (one
    8-connected region), and a speck below any minimal area."""
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[10:60, 10:20] = 1
    labels[50:60, 10:50] = 1  # L shape
    labels[20:50, 70:110] = 2
    labels[30:40, 85:95] = 0  # ring
    labels[70:80, 60:70] = 1
    labels[80:90, 70:80] = 1  # touches the block above at a corner
    labels[90:92, 120:122] = 2  # speck
    probs = torch.full((3, h, w), 0.1)
    probs.scatter_(0, labels[None], 0.8)
    probs[1, 15, 12] = 0.95  # the L's peak
    return probs, labels


@pytest.fixture()
def predictor(models):
    p = Proposer(models[1])
    rng = np.random.default_rng(0)
    p.set_image((rng.random((96, 128, 3)) * 255).astype(np.uint8))
    return p.predictor


def test_refinement_prompts_and_rule(predictor):
    probs, labels = _regions_case()
    spy = _Spy(predictor)
    out = trident_refine(probs, labels, spy, coarse_thresh=0.2, minimal_area=20,
                         sam_iou_thresh=-1e9)  # fmt: skip
    # class 0: the surround and the ring's hole; 1: the L and the corner pair; 2: the ring
    assert [len(kw["boxes"]) for kw, _ in spy.calls] == [2, 2, 1]
    kw1 = spy.calls[1][0]
    tr = predictor.transform
    box_l = tr.apply_boxes_torch(torch.tensor([[5.0, 5.0, 24.0, 29.0]]), (48, 64))
    torch.testing.assert_close(kw1["boxes"][0], box_l[0])
    pt = tr.apply_coords_torch(torch.tensor([[6.0, 7.0]]), (48, 64))  # peak (12, 15) / 2
    torch.testing.assert_close(kw1["point_coords"][0, 0], pt[0])
    assert kw1["mask_input"].shape == (1, 64, 64)
    spy.calls_by_class = spy.calls
    scores = _expected(probs, labels, spy, -1e9, (96, 128))
    covered = (scores.sum(0) > 0).numpy()
    assert np.array_equal(out.labels[~covered], labels.numpy()[~covered])
    # sigmoid(logits) x probs recomputed here in other batches: equal to rounding, so the
    # argmax is compared where its top two classes are apart
    assert_labels_are_argmax(out.labels[covered], scores.numpy()[:, covered], margin=1e-6,
                             min_fraction=0.99)  # fmt: skip
    assert len(out.masks) == 5 and sorted(out.mask_classes.tolist()) == [0, 0, 1, 1, 2]
    # nowhere else: outside every kept mask the coarse label stays
    outside = ~out.masks.any(0)
    assert np.array_equal(out.labels[outside], labels.numpy()[outside])


def test_refinement_keeps_map_without_regions_or_masks(predictor):
    probs, labels = _regions_case()
    for opts in (dict(coarse_thresh=0.99), dict(minimal_area=10_000), dict(sam_iou_thresh=1e9)):
        spy = _Spy(predictor)
        out = trident_refine(probs, labels, spy, **{"coarse_thresh": 0.2, **opts})
        assert np.array_equal(out.labels, labels.numpy()) and len(out.masks) == 0
        assert bool(spy.calls) == ("sam_iou_thresh" in opts)
    flat = torch.full((3, 96, 128), 1 / 3)
    out = trident_refine(flat, torch.zeros(96, 128, dtype=torch.long), _Spy(predictor),
                         coarse_thresh=0.5)  # fmt: skip
    assert (out.labels == 0).all() and out.scores.max() == 0


def test_refinement_below_coarse_threshold_does_not_prompt(predictor):
    probs, labels = _regions_case()
    probs[2] = 0.15  # class 2 never reaches coarse_thresh: no prompt for it
    spy = _Spy(predictor)
    trident_refine(probs, labels, spy, coarse_thresh=0.2, minimal_area=20, sam_iou_thresh=-1e9)
    assert [len(kw["boxes"]) for kw, _ in spy.calls] == [2, 2]


@pytest.mark.parametrize(
    "bad",
    [dict(cos_fac="x"), dict(coarse_thresh=1.5), dict(minimal_area=-1), dict(refine_neg_cos=1),
     dict(sam_iou_thresh=float("nan")), dict(sam_mask_coeff=-0.1), dict(sam_halves="yes")],
)  # fmt: skip
def test_bad_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        method_config("trident", **bad)


def test_trident_options_belong_to_trident():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['cos_fac'\] for method 'naclip'"):
        method_config("naclip", cos_fac=1.0)
    assert method_config("trident", "cityscapes").sam_halves
    assert method_config("trident", "voc20").cos_fac == 0.0


@pytest.mark.filterwarnings("ignore:ovseg. the tiny random SAM")
def test_segmenter_trident(image):
    from ovseg.pipeline import Segmenter

    with pytest.raises(ValueError, match="SAM"):
        Segmenter(None, "tiny-random", dino="tiny-random", method="trident")
    with pytest.raises(ValueError, match="DINO"):
        Segmenter("tiny-random", "tiny-random", method="trident")
    seg = Segmenter("tiny-random", "tiny-random", dino="tiny-random", method="trident",
                    sam_iou_thresh=-1e9, minimal_area=4, **OPTS)  # fmt: skip
    img = np.ascontiguousarray(image[:112, :192])  # sides multiples of 16: one SAM pass
    classes = ["cat", "dog", "sky"]
    probs = seg.pixel_probabilities(img, classes)
    assert probs.shape == (3, 112, 192) and probs.dtype == np.float32
    result = seg.segment(img, classes)
    assert result.label_map.shape == (112, 192) and len(result.segments) >= 1
    owned = result.segment_map >= 0
    assert owned[result.label_map >= 0].all()
    for s in result.segments:
        assert (result.label_map[s.mask] == s.class_index).all()
    prompted = seg.segment(img, classes, points=[[50, 50]])
    assert prompted.label_map.shape == (112, 192)
    assert seg.proposer.encoder_calls == 1


@pytest.mark.filterwarnings("ignore:ovseg. the tiny random SAM")
def test_bench_row_pays_sam_encoder_each_image(image):
    from ovseg.bench.methods import build_methods, run_method
    from ovseg.bench.runner import BenchConfig
    from ovseg.models.build import build_clip, resolve_device

    cpu = resolve_device("cpu")
    config = BenchConfig(sam="tiny-random", clip="tiny-random", methods=("trident",))
    segs, errors = build_methods(config, build_clip("tiny-random", cpu), cpu)
    assert errors == {} and segs["trident"].has_sam
    img = np.ascontiguousarray(image[:112, :192])
    for _ in range(2):
        run = run_method(segs["trident"], img, ["a", "b"], dict(OPTS), cpu)
        assert run["probabilities"] > 0 and run["labels"] > 0
    assert segs["trident"].proposer.encoder_calls == 2  # not served from the cache


@pytest.mark.filterwarnings("ignore:ovseg. the tiny random SAM")
def test_eval_method_trident_is_the_refined_map(tmp_path):
    import json

    from PIL import Image

    from ovseg.eval.datasets import open_dataset
    from ovseg.eval.runner import evaluate
    from ovseg.methods.classnames import class_names, query_list
    from ovseg.methods.dense import predict_labels
    from ovseg.methods.text import query_embeddings
    from ovseg.pipeline import Segmenter
    from ovseg.result import read_label_png
    from ovseg.scoring.vocabulary import resolve_templates, text_embeddings

    base = tmp_path / "voc" / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "SegmentationClass").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(
        base / "JPEGImages" / "im0.png"
    )
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(base / "SegmentationClass" / "im0.png")
    seg = Segmenter("tiny-random", "tiny-random", "cpu", dino="tiny-random", method="trident")
    opts = dict(coarse_thresh=0.0, minimal_area=4, sam_iou_thresh=-1e9, **OPTS)
    out = tmp_path / "trident.json"
    evaluate(tmp_path / "voc", out, kind="voc21", segmenter=seg, progress=False,
             method_options=opts)  # fmt: skip
    queries, owners = query_list(class_names("trident", "voc21"))
    # the evaluation's own embeddings (cached on the backend): a fresh text batch agrees only
    # to rounding, and the labels go through argmax and threshold cuts
    text = text_embeddings(queries, resolve_templates("imagenet"), seg.clip)
    own = query_embeddings(seg.clip.model, seg.clip.tokenizer, queries)
    torch.testing.assert_close(text, own, atol=1e-5, rtol=0)  # the method's queries, templates
    config = seg.config("voc21", **opts)
    sample = open_dataset(tmp_path / "voc", "voc21")[0]
    probs = seg.method.query_probabilities(
        sample.image, text, owners, 21, seg.models, seg.method.fit((64, 96), config, seg.models)
    )
    coarse = predict_labels(probs, config, 0).numpy()
    refined = seg.method.finish(sample.image, probs, coarse, seg.models, config)
    assert len(refined.masks) > 0  # the refinement ran
    cache = json.loads(out.read_text())["cache"]
    np.testing.assert_array_equal(read_label_png(f"{cache}/im0.png"), refined.labels)
