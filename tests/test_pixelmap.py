"""PixelMap: tiles equal the whole-image computations they replace.

Each reduction is compared with the full-tensor function it stands for (``F.interpolate``,
``pamr``, ``class_max``, ``predict_labels``, ``mask_class_scores``) on odd sizes and on tiles
that do not divide the image. Probabilities are compared with an absolute tolerance; labels of
a map computed two ways only where the top two probabilities are clearly apart, and exactly
where both ways see the same numbers (a map over a tensor).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ovseg.fusion import mask_class_scores
from ovseg.methods.config import method_config
from ovseg.methods.dense import class_max, predict_labels
from ovseg.methods.pamr import pamr, pamr_halo
from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.tiles import bilinear_window, source_span

QUERY_CLASS = [0, 0, 1, 2, 2, 2, 3, 5]  # class 4 has no query
K = 6


def _low(q=8, h=23, w=31, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(q, h, w, generator=g) * spread


# Tiles against the whole-image tensors: torch's vectorised and scalar bilinear kernels (an
# AVX2/AVX-512 CPU or not) round the source coordinates differently, a few units in the last
# place of the values (measured up to 3.5e-6 on probabilities); a softmax at logit scale 40
# multiplies that by up to 10 (1.9e-5 measured, 5.1e-5 after 10 PAMR steps). Window errors
# (a missing halo, a wrong offset) are above 1e-3.
TOL = 1e-5
TOL_40 = 1e-4


def _full_probs(low, size, scale=40.0, guide=None, steps=0, dilations=(8, 16)):
    logits = F.interpolate(low[None], size=size, mode="bilinear", align_corners=False)
    if steps:
        big = F.interpolate(guide[None], size=size, mode="bilinear", align_corners=False)
        logits = pamr(big, logits, steps, dilations)
    return class_max(torch.softmax(logits[0] * scale, dim=0), QUERY_CLASS, K)


def _clear(probs: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Pixels whose two largest values are at least ``margin`` apart."""
    top2 = np.sort(probs, axis=0)[-2:]
    return top2[1] - top2[0] > margin


# ----------------------------------------------------------------------------- resize
@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 19),
    w=st.integers(1, 19),
    big_h=st.integers(1, 90),
    big_w=st.integers(1, 90),
    data=st.data(),
)
def test_bilinear_window_is_a_window_of_interpolate(h, w, big_h, big_w, data):
    src = torch.rand(2, h, w, generator=torch.Generator().manual_seed(h * 100 + w)) * 2 - 1
    full = F.interpolate(src[None], size=(big_h, big_w), mode="bilinear", align_corners=False)[0]
    r0 = data.draw(st.integers(0, big_h - 1))
    r1 = data.draw(st.integers(r0 + 1, big_h))
    c0 = data.draw(st.integers(0, big_w - 1))
    c1 = data.draw(st.integers(c0 + 1, big_w))
    out = bilinear_window(src, (big_h, big_w), (r0, r1), (c0, c1))
    torch.testing.assert_close(out, full[:, r0:r1, c0:c1], atol=1e-6, rtol=0)
    # from only the source pixels the window needs
    (s0, s1), (t0, t1) = source_span(h, big_h, r0, r1), source_span(w, big_w, c0, c1)
    part = bilinear_window(src[:, s0:s1, t0:t1], (big_h, big_w), (r0, r1), (c0, c1),
                           offset=(s0, t0), in_size=(h, w))  # fmt: skip
    torch.testing.assert_close(part, full[:, r0:r1, c0:c1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(217, 341), (30, 500), (23, 31), (11, 13)])
@pytest.mark.parametrize("tile", [37, 64, 1000])
def test_from_logits_equals_full_path(size, tile):
    low = _low()
    ref = _full_probs(low, size).numpy()
    pm = PixelMap.from_logits(low, size, 40.0, QUERY_CLASS, K, tile_size=tile)
    assert pm.shape == (K, *size)
    out = pm.numpy()
    np.testing.assert_allclose(out, ref, atol=TOL_40, rtol=0)
    assert not out[4].any()  # a class without queries is 0


def test_one_row_per_query_without_classes():
    low = _low(q=3)
    pm = PixelMap.from_logits(low[None], (40, 50), 10.0, tile_size=16)
    full = F.interpolate(low[None], size=(40, 50), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(pm.numpy(), torch.softmax(full * 10, 0).numpy(), atol=TOL)


# ----------------------------------------------------------------------------- PAMR halo
@pytest.mark.parametrize("tile", [23, 40])
def test_pamr_tiles_equal_whole_image_pamr(tile):
    size, steps, dilations = (97, 131), 3, (2, 5)
    low, guide = _low(h=13, w=17, seed=1), torch.randn(3, 13, 17) * 2
    ref = _full_probs(low, size, 40.0, guide, steps, dilations).numpy()
    pm = PixelMap.from_logits(low, size, 40.0, QUERY_CLASS, K, guide=guide, pamr_steps=steps,
                              pamr_dilations=dilations, tile_size=tile)  # fmt: skip
    assert pamr_halo(steps, dilations) == 15  # interior tiles refine a window 2 x 15 wider
    np.testing.assert_allclose(pm.numpy(), ref, atol=TOL_40, rtol=0)
    # the halo is what makes the tiles exact: without it the tile borders are wrong
    pm._source.halo = 2
    assert np.abs(pm.numpy() - ref).max() > 1e-3


def test_naclip_pamr_settings_on_a_few_tiles():
    size = (360, 380)  # larger than one tile plus NACLIP's 160-pixel halo on each side
    low, guide = _low(h=31, w=33, seed=2, spread=0.2), torch.randn(3, 31, 33)
    ref = _full_probs(low, size, 40.0, guide, 10, (8, 16)).numpy()
    pm = PixelMap.from_logits(low, size, 40.0, QUERY_CLASS, K, guide=guide, pamr_steps=10,
                              tile_size=190)  # fmt: skip
    np.testing.assert_allclose(pm.numpy(), ref, atol=2 * TOL_40, rtol=0)  # 10 PAMR steps


# ----------------------------------------------------------------------------- predict
def _probs_tensor(h=61, w=77, k=5, seed=5):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(k, h, w, generator=g) * 2, dim=0)
    probs[3] *= 0.2  # a rare class, removed by SCLIP's area rule
    probs[1, 40:, 50:] = probs[1, 40:, 50:].round(decimals=1)  # exact ties
    probs[2, 40:, 50:] = probs[1, 40:, 50:]
    return probs


CONFIGS = [("sclip", "voc21"), ("clearclip", "voc21"), ("naclip", "context59"),
           ("sclip", "voc20"), ("proxyclip", "coco_object")]  # fmt: skip


@pytest.mark.parametrize(("method", "dataset"), CONFIGS)
@pytest.mark.parametrize("tile", [16, 29, 100])
def test_predict_equals_predict_labels(method, dataset, tile):
    probs = _probs_tensor()
    cfg = method_config(method, dataset)
    ref = predict_labels(probs, cfg).numpy()
    pm = PixelMap.from_tensor(probs, tile_size=tile)
    labels, conf = pm.predict(prob_threshold=cfg.prob_threshold,
                              area_threshold=cfg.area_threshold)  # fmt: skip
    assert labels.dtype == np.int32 and conf.dtype == np.float32
    np.testing.assert_array_equal(labels, ref)  # same numbers: exactly equal, ties included
    expected = np.take_along_axis(probs.numpy(), ref[None].astype(np.int64), 0)[0]
    np.testing.assert_array_equal(conf, expected)


def test_area_rule_recomputes_only_tiles_with_a_dropped_class():
    probs = _probs_tensor()
    probs[3] = 0
    probs[3, :8, :8] = 1.0  # the rare class lives in the first tile only
    calls = []
    pm = PixelMap.from_tensor(probs, tile_size=16)
    original = pm.tile
    pm.tile = lambda rows, cols: calls.append((rows, cols)) or original(rows, cols)
    labels, _ = pm.predict(area_threshold=0.1)
    tiles = len(list(pm.windows()))
    assert len(calls) == tiles + 1  # one pass, then the first tile again
    cfg = method_config("sclip", "voc21", prob_threshold=0.0)
    np.testing.assert_array_equal(labels, predict_labels(probs, cfg).numpy())
    assert not (labels == 3).any()


def test_predict_from_logits_where_the_margin_is_clear():
    size = (131, 97)
    low = _low(spread=0.6)
    ref_probs = _full_probs(low, size)
    cfg = method_config("naclip", "context60")  # probability threshold 0.1
    ref = predict_labels(ref_probs, cfg).numpy()
    labels, conf = PixelMap.from_logits(low, size, 40.0, QUERY_CLASS, K, tile_size=50).predict(
        prob_threshold=cfg.prob_threshold
    )
    p = ref_probs.numpy()
    clear = _clear(p) & (np.abs(p.max(0) - cfg.prob_threshold) > 1e-3)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], ref[clear])
    np.testing.assert_allclose(conf, np.take_along_axis(p, labels[None].astype(int), 0)[0],
                               atol=TOL_40)  # fmt: skip


def test_predict_bad_arguments():
    pm = PixelMap.from_tensor(_probs_tensor())
    with pytest.raises(ValueError, match="background_class"):
        pm.predict(prob_threshold=0.2, background_class=None)
    with pytest.raises(ValueError, match="background_class"):
        pm.predict(background_class=5)
    with pytest.raises(ValueError, match="prob_threshold"):
        pm.predict(prob_threshold=1.5)
    with pytest.raises(ValueError, match="area_threshold"):
        pm.predict(area_threshold=-0.1)
    labels, _ = pm.predict(background_class=None)
    np.testing.assert_array_equal(labels, _probs_tensor().argmax(0).numpy())


# ----------------------------------------------------------------------------- reductions
def test_pick_heatmap_and_numpy():
    probs = _probs_tensor(h=45, w=38)
    pm = PixelMap.from_tensor(probs, tile_size=17)
    np.testing.assert_array_equal(pm.numpy(), probs.numpy())
    np.testing.assert_array_equal(pm.heatmap(2), probs[2].numpy())
    labels = np.random.default_rng(0).integers(-1, 5, (45, 38))
    picked = pm.pick(labels)
    expected = np.take_along_axis(probs.numpy(), np.clip(labels, 0, 4)[None], 0)[0]
    np.testing.assert_array_equal(picked, np.where(labels >= 0, expected, 0))
    with pytest.raises(ValueError, match="row"):
        pm.heatmap(5)
    with pytest.raises(ValueError, match="labels"):
        pm.pick(labels[:-1])


def test_pick_of_the_predicted_labels_needs_no_pass(monkeypatch):
    probs = _probs_tensor(h=45, w=38)
    pm = PixelMap.from_tensor(probs, tile_size=17)
    labels, confidence = pm.predict(prob_threshold=0.3, background_class=0)
    fresh = PixelMap.from_tensor(probs, tile_size=17)
    unlabeled = np.where(labels == 0, -1, labels)  # the background made UNLABELED, as callers do
    other = (labels + 1) % 5
    monkeypatch.setattr(PixelMap, "tile", lambda *a: pytest.fail("a pass over the tiles"))
    np.testing.assert_array_equal(pm.pick(labels), confidence)
    np.testing.assert_array_equal(pm.pick(unlabeled), np.where(labels == 0, 0, confidence))
    monkeypatch.undo()
    np.testing.assert_array_equal(pm.pick(other), fresh.pick(other))  # other labels: a pass
    np.testing.assert_array_equal(fresh.pick(labels), confidence)


def test_mask_scores_equal_mask_class_scores():
    probs = _probs_tensor(h=70, w=90).numpy()
    rng = np.random.default_rng(1)
    masks = rng.random((6, 70, 90)) < 0.3
    masks[1] = False  # empty
    masks[2] = False
    masks[2, 3:9, 4:12] = True  # inside one tile
    pm = PixelMap.from_tensor(probs, tile_size=32)
    ours = pm.mask_scores(masks)
    assert ours.shape == (6, 5) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, mask_class_scores(masks, probs), atol=1e-6, rtol=0)
    assert not ours[1].any()
    assert pm.mask_scores(np.zeros((0, 70, 90), bool)).shape == (0, 5)
    with pytest.raises(ValueError, match="masks"):
        pm.mask_scores(masks[:, :-1])


def test_select_forms_a_background_row():
    probs = _probs_tensor(h=33, w=41)
    k = 3  # classes 0..2, background names 3 and 4
    groups = [[0], [1], [2], [3, 4]]
    pm = PixelMap.from_tensor(probs, tile_size=20).select(groups)
    expected = torch.cat([probs[:k], probs[k:].amax(0, keepdim=True)])
    np.testing.assert_array_equal(pm.numpy(), expected.numpy())
    empty = PixelMap.from_tensor(probs).select([[0], [1], [2], []])  # no background: zeros
    assert empty.shape == (4, 33, 41) and not empty.numpy()[3].any()
    # on a map of queries: a class over its queries, then a background row over classes
    low = _low()
    m = PixelMap.from_logits(low, (40, 44), 40.0, QUERY_CLASS, K, tile_size=25)
    both = m.select([[0], [1], [2], [3, 5], []])
    full = _full_probs(low, (40, 44))
    ref = torch.stack([full[0], full[1], full[2], torch.maximum(full[3], full[5]), full[4] * 0])
    np.testing.assert_allclose(both.numpy(), ref.numpy(), atol=1e-5, rtol=0)
    for bad, error in [
        ([[6]], ValueError),
        ("ab", TypeError),
        ([], TypeError),
        ([[0.5]], ValueError),
    ]:
        with pytest.raises(error):
            m.select(bad)


@pytest.mark.parametrize("size", [(54, 72), (20, 25), (300, 200)])
def test_resize_equals_interpolate(size):
    probs = _probs_tensor(h=109, w=145)
    pm = PixelMap.from_tensor(probs, tile_size=31).resize(size)
    full = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(pm.numpy(), full.numpy(), atol=TOL, rtol=0)


def test_tile_arguments_and_sizing():
    pm = PixelMap.from_logits(_low(), (200, 300), 40.0, QUERY_CLASS, K, work_bytes=2**20)
    side = pm.tile_size
    assert 16 <= side < 300 and pm.work(side) <= 2**20
    windows = list(pm.windows())
    covered = np.zeros((200, 300), int)
    for rows, cols in windows:
        covered[rows, cols] += 1
    assert (covered == 1).all()
    t = pm.tile(slice(5, 9), (10, 13))
    assert t.shape == (K, 4, 3)
    for rows in [(5, 5), (-1, 3), (0, 201), slice(0, 10, 2)]:
        with pytest.raises(ValueError):
            pm.tile(rows, (0, 5))
    with pytest.raises(TypeError):
        pm.tile(3, (0, 5))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(logits=torch.zeros(3, 4)), TypeError),
        (dict(size=(0, 4)), ValueError),
        (dict(logit_scale=0.0), ValueError),
        (dict(logit_scale=float("nan")), ValueError),
        (dict(query_class=[0, 1]), ValueError),
        (dict(query_class=[0, 1, 9]), ValueError),
        (dict(num_classes=0), ValueError),
        (dict(pamr_steps=2), TypeError),  # no guide
        (dict(pamr_steps=2, guide=torch.zeros(4, 5, 5)), ValueError),
        (dict(pamr_steps=-1), ValueError),
        (dict(pamr_dilations=(0,)), ValueError),
        (dict(work_bytes=0), ValueError),
    ],
)
def test_from_logits_bad_arguments(kwargs, error):
    args = dict(logits=torch.zeros(3, 4, 5), size=(10, 12), logit_scale=40.0,
                query_class=[0, 1, 1], num_classes=2)  # fmt: skip
    with pytest.raises(error):
        PixelMap.from_logits(**{**args, **kwargs})


# ----------------------------------------------------------------------------- memory
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_predict_memory_is_the_output_plus_a_tile():
    """A labels + confidence pass over 1000 x 1000 with 64 queries and 40 classes holds 8 MB of
    output and a 32 MB tile budget, where the full tensors take 256 MB (queries) + 160 MB."""
    code = textwrap.dedent(
        """
        import resource, torch
        from ovseg.methods.pixelmap import PixelMap
        torch.set_num_threads(1)
        low = torch.randn(64, 40, 40)
        pm = PixelMap.from_logits(low, (1000, 1000), 40.0, [q % 40 for q in range(64)], 40,
                                  work_bytes=32 * 2**20)
        pm.tile((0, 16), (0, 16))  # warm up torch's allocator and kernels
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        labels, conf = pm.predict()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 128, grown_mb


def test_predict_returns_its_own_arrays_and_pick_notices_changes():
    probs = _probs_tensor(h=45, w=38)
    pm = PixelMap.from_tensor(probs, tile_size=17)
    labels, confidence = pm.predict()
    assert pm.predict()[0] is not labels  # each call its own arrays, remembered (not copied)
    labels, confidence = pm.predict()
    labels[:5] = (labels[:5] + 1) % 5  # the caller changes them in place
    expected = np.take_along_axis(probs.numpy(), labels[None].astype(np.int64), 0)[0]
    np.testing.assert_array_equal(pm.pick(labels), expected)  # a pass, not the stale values
