"""CorrCLIPv2 against an independent implementation of its formulas on tiny random models:
the window (VFM correlations, no merging), the support map (retrieval, mean, cosine, DMCE),
the blend; retrieval changes the map; presets, the method's steps and bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from corrclipv2_models import tiny_clip_backend
from test_methods_corrclip import _block, _nearest

pytest.importorskip("faiss")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def tiny():
    from ovseg.methods.vfm import tiny_dinov2_vfm

    return SimpleNamespace(
        clip=tiny_clip_backend(1, "main", embed_dim=32),
        aux=tiny_clip_backend(2, "aux", embed_dim=24),
        vfm=tiny_dinov2_vfm(seed=3, dim=32, name="vfm"),
    )


def _image_and_regions(h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:, : w // 2] //= 3
    ids = np.zeros((h, w), np.int64)
    ids[2:30, 4:40] = 5
    ids[20:48, 36:78] = 2
    ids[0:8, 70:80] = 9
    ids[h - 3, 3] = 7  # a single pixel
    return img, ids


def independent_window(visual, crop, feats, ids):
    """CorrCLIPv2's window from its description: no merging; scope in the same region, or
    touching the unsegmented (smallest) region with similarity above the mean; softmax(4 S)."""
    p = visual.conv1.kernel_size[0]
    fh, fw = crop.shape[2] // p * 2, crop.shape[3] // p * 2
    f = F.interpolate(feats, size=(fh, fw), mode="bilinear", align_corners=False)
    f = F.normalize(f[0].reshape(f.shape[1], -1).T, dim=-1)
    sim = f @ f.T
    cells = _nearest(ids, (fh, fw)).reshape(-1)
    loose = cells == cells.min()
    mean = sim.mean()
    scope = torch.zeros_like(sim, dtype=torch.bool)
    for i in range(len(cells)):
        for j in range(len(cells)):
            same = cells[i] == cells[j] and not loose[i]
            scope[i, j] = bool(same or ((loose[i] or loose[j]) and sim[i, j] > mean))
    attn = torch.softmax(4 * sim.masked_fill(~scope, float("-inf")), -1)

    from ovseg.methods.clip_blocks import embed_tokens

    x, (gh, gw) = embed_tokens(visual, crop)
    x = x[0]
    tok = _nearest(cells.reshape(fh, fw), (gh, gw)).reshape(-1)
    blocks = visual.transformer.resblocks
    tokens = {r: x[:1].clone() for r in np.unique(tok)}
    outputs = []
    for blk in blocks:
        for r in tokens:
            keys = torch.cat([x[:1], x[1:][torch.from_numpy(tok == r)]])
            tokens[r] = _block(blk, tokens[r], keys)
        if blk is not blocks[-1]:
            x = _block(blk, x)
            outputs.append(x)
    spatial = torch.stack(outputs[2 : len(blocks) - 2]).mean(0)
    last = blocks[-1]
    c = x.shape[-1]

    def value_path(t):
        v = last.ln_1(t) @ last.attn.in_proj_weight[2 * c :].T + last.attn.in_proj_bias[2 * c :]
        v = F.interpolate(v[1:].T.reshape(1, c, gh, gw), size=(fh, fw), mode="bilinear")
        return last.attn.out_proj(attn @ v.reshape(c, -1).T)

    cell_tok = _nearest(tok.reshape(gh, gw), (fh, fw)).reshape(-1)
    semantic = torch.cat([tokens[r] for r in cell_tok])
    ln = visual.ln_post
    out = ln(value_path(x)) + ln(value_path(spatial)) + 0.5 * ln(semantic)
    return (out @ visual.proj).T.reshape(1, -1, fh, fw)


@torch.inference_mode()
def test_window_matches_independent_implementation(tiny):
    from ovseg.methods.corrclipv2 import corrclipv2_window_features
    from ovseg.methods.geometry import normalize_image

    img, ids = _image_and_regions()
    crop = normalize_image(img)
    feats = torch.randn(1, 32, 48, 80, generator=torch.Generator().manual_seed(1))
    visual = tiny.clip.model.visual
    for variant in (ids, ids + 1, np.zeros_like(ids)):  # with 0, without 0, no regions
        ours = corrclipv2_window_features(
            visual, crop, torch.from_numpy(variant)[None, None].float(), feats
        )
        ref = independent_window(visual, crop, feats, variant)
        assert ours.shape == ref.shape == (1, 32, 6, 10)
        torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def _bank(tmp_path, n=60, seed=0, stores=(("main", 32), ("aux", 24)), dim=32, rows=None):
    """A bank of random unit keys with a flat index (exact search) and random stores."""
    import faiss

    from ovseg.methods.bank import MemoryBank

    g = torch.Generator().manual_seed(seed)
    root = tmp_path / f"bank{seed}"
    (root / "clip_embeddings").mkdir(parents=True)
    (root / "vfm_embeddings").mkdir()
    keys = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    index.add_with_ids(keys.numpy(), np.arange(n, dtype="int64"))
    faiss.write_index(index, str(root / "vfm_embeddings" / "b_vfm.faiss"))
    for key, d in stores:
        data = torch.randn(n, d, generator=g) if rows is None else rows(key, n)
        torch.save(data.half(), root / "clip_embeddings" / f"b_{key}.pt")
    return MemoryBank.open(root, vfm="vfm", clips=[k for k, _ in stores]), keys


def test_support_map_matches_formula(tmp_path):
    from ovseg.methods.corrclipv2 import region_queries, support_logits

    bank, keys = _bank(tmp_path)
    g = torch.Generator().manual_seed(5)
    vfm_map = F.normalize(torch.randn(1, 32, 12, 16, generator=g), dim=1)
    ids = torch.zeros(12, 16, dtype=torch.long)
    ids[2:8, 3:9], ids[6:12, 10:16], ids[0, 15] = 4, 1, 8
    texts = {"main": F.normalize(torch.randn(5, 32, generator=g), dim=-1),
             "aux": F.normalize(torch.randn(5, 24, generator=g), dim=-1)}  # fmt: skip
    out = support_logits(bank, region_queries(vfm_map, ids), ids, texts, k=7)
    assert out.shape == (5, 12, 16)
    expected = torch.zeros(5, 12, 16, dtype=torch.float64)
    for v in torch.unique(ids):
        m = ids == v
        q = vfm_map[0].permute(1, 2, 0)[m].double().mean(0)
        q = q / q.norm()
        top = torch.argsort(keys.double() @ q, descending=True)[:7]
        total = 0
        for key, text in texts.items():
            s = bank.stores[key][top].double().mean(0)
            total = total + (s / s.norm()) @ text.double().T
        expected[:, m] = (total / 2)[:, None]
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_blend_and_retrieval_change_the_map(tiny, tmp_path):
    from ovseg.methods.corrclipv2 import (
        CorrCLIPv2Config,
        corrclipv2_logits,
        region_queries,
        support_logits,
    )
    from ovseg.methods.geometry import imrescale_size
    from ovseg.methods.regions import rank_ids, resize_ids
    from ovseg.methods.vfm import vfm_dense

    img, ids = _image_and_regions()
    g = torch.Generator().manual_seed(2)
    text = F.normalize(torch.randn(3, 32, generator=g), dim=-1)
    aux_text = F.normalize(torch.randn(3, 24, generator=g), dim=-1)
    target = {"main": text[2], "aux": aux_text[2]}  # every bank region looks like query 2
    bank, _ = _bank(
        tmp_path, rows=lambda key, n: target[key].repeat(n, 1) + 0.01 * torch.randn(n, 1)
    )
    config = CorrCLIPv2Config(short_side=56, slide_crop=56, slide_stride=28, num_support=5)
    visual = tiny.clip.model.visual
    with_bank = corrclipv2_logits(visual, tiny.vfm, img, ids, text, config, bank, aux_text)
    without = corrclipv2_logits(visual, tiny.vfm, img, ids, text, config, None)
    # the blend, rebuilt from its parts: alpha * own map + (1 - alpha) * support, resized
    size = imrescale_size(48, 80, 56)
    feats = F.normalize(F.interpolate(vfm_dense(tiny.vfm, img), size=size, mode="bilinear"), dim=1)
    r = resize_ids(torch.from_numpy(rank_ids(ids)), size)
    support = support_logits(bank, region_queries(feats, r), r, {"main": text, "aux": aux_text}, 5)
    support = F.interpolate(support[None], size=(48, 80), mode="bilinear")[0]
    torch.testing.assert_close(with_bank, 0.5 * without + 0.5 * support, atol=1e-5, rtol=1e-5)
    # retrieval matters: removing the bank changes the map, towards the bank's class
    a, b = with_bank.argmax(0), without.argmax(0)
    assert (a != b).float().mean() > 0.05
    assert (a == 2).sum() > (b == 2).sum()
    # use_bank=False is the map without a bank
    off = CorrCLIPv2Config(short_side=56, slide_crop=56, slide_stride=28, use_bank=False)
    torch.testing.assert_close(
        corrclipv2_logits(visual, tiny.vfm, img, ids, text, off, bank, aux_text), without
    )


def test_presets_and_config_checks():
    from ovseg.methods.corrclipv2 import CorrCLIPv2Config

    base = CorrCLIPv2Config.preset()
    assert (base.short_side, base.slide_crop, base.slide_stride) == (336, 336, 112)
    assert (base.logit_scale, base.num_support, base.alpha, base.prob_threshold) == (
        40.0, 20, 0.5, 0.0,
    )  # fmt: skip
    assert CorrCLIPv2Config.preset("voc21").prob_threshold == 0.2
    assert CorrCLIPv2Config.preset("context60").prob_threshold == 0.15
    assert CorrCLIPv2Config.preset("coco_object").prob_threshold == 0.25
    city = CorrCLIPv2Config.preset("cityscapes")
    assert (city.short_side, city.slide_crop, city.slide_stride) == (784, 224, 112)
    assert CorrCLIPv2Config.preset("ade20k").short_side == 448
    assert CorrCLIPv2Config.preset("voc21", num_support=5).num_support == 5
    with pytest.raises(ValueError, match="unknown dataset"):
        CorrCLIPv2Config.preset("mars")
    with pytest.raises(ValueError, match="unknown CorrCLIPv2 option"):
        CorrCLIPv2Config.preset(topk=3)
    for bad in ({"num_support": 0}, {"alpha": 1.5}, {"slide_crop": 50, "slide_stride": 60},
                {"logit_scale": 0}, {"use_aux": "yes"}):  # fmt: skip
        with pytest.raises(ValueError):
            CorrCLIPv2Config(**bad)
    with pytest.raises(AttributeError):
        base.alpha = 0.3  # frozen


@torch.inference_mode()
def test_method_steps(tiny, tmp_path):
    from ovseg.methods.corrclipv2 import CorrCLIPv2, CorrCLIPv2Config
    from ovseg.methods.regions import region_vote
    from ovseg.scoring.vocabulary import Vocabulary

    img, ids = _image_and_regions()
    bank, _ = _bank(tmp_path)
    bank.aux_clip = tiny.aux
    models = SimpleNamespace(clip=tiny.clip, vfm=tiny.vfm, bank=bank, proposer=None)
    vocab = Vocabulary(["road; street", "car"], templates="simple", background=["sky"])
    config = CorrCLIPv2Config(short_side=56, slide_crop=56, slide_stride=28, prob_threshold=0.4)
    method = CorrCLIPv2()
    assert method.name == "corrclipv2" and {"vfm", "bank", "regions"} <= method.needs
    probs = method.probabilities(img, vocab, models, config, regions=ids)
    assert probs.shape == (3, 48, 80) and probs.dtype == torch.float32
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    labels = method.predict(probs, config, background=2)
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1, 2}
    assert (labels[probs.max(0).values.numpy() < 0.4] == 2).all()
    final = method.finish(img, probs, labels, models, config, regions=ids)
    np.testing.assert_array_equal(final.labels, region_vote(labels, ids))
    masks = np.zeros((2, 48, 80), bool)
    masks[0, :10], masks[1, 40:] = True, True
    scores = method.mask_scores(img, masks, probs, vocab, models, config)
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(scores[0], probs[:2, :10].mean((1, 2)).numpy(), rtol=1e-5)
    # the auxiliary store is read only with its CLIP; asked for without one: a clear error
    no_aux = SimpleNamespace(**{**vars(models), "bank": bank})
    bank.aux_clip = None
    with pytest.raises(ValueError, match="use_aux=True"):
        method.probabilities(
            img, vocab, no_aux, CorrCLIPv2Config(short_side=56, use_aux=True), regions=ids
        )
    with pytest.raises(ValueError, match="memory bank"):
        method.probabilities(
            img, vocab, SimpleNamespace(**{**vars(models), "bank": None}), config, regions=ids
        )
    with pytest.raises(ValueError, match="regions"):
        method.probabilities(img, vocab, models, config)  # no masks=, no SAM
