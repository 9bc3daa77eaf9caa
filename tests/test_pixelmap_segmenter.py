"""A method's probabilities as a PixelMap, through the protocol and the Segmenter.

Two Segmenters on the same tiny random CLIP, one whose method returns its probabilities as a
tensor and one forced (``map_bytes = 0``) to return a tiled
:class:`~ovseg.methods.pixelmap.PixelMap` with small tiles: probabilities, labels,
confidence, segments and mask scores must agree (labels compared where the top two
probabilities are apart, so that float rounding cannot flip them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.methods.pixelmap import PixelMap
from ovseg.methods.protocol import label_probability, with_background
from ovseg.pipeline import Segmenter
from ovseg.structures import Masks, masks_to_boxes

CLASSES = ["road; street", "car", "sky", "tree"]
TILE = 64
MARGIN = 1e-4


def _image(h: int, w: int) -> np.ndarray:
    """A sky band and a grey block, both textured: PAMR divides local differences of the guide
    by their local spread, which on a flat patch is rounding noise over rounding noise (its
    result there changes with the thread count), so no patch is flat."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3)).astype(np.int64)
    texture = rng.integers(-40, 41, (h, w, 3))
    img[: h // 3] = np.array([135, 190, 235]) + texture[: h // 3]
    img[2 * h // 3 :, : w // 2] = 90 + texture[2 * h // 3 :, : w // 2]
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _image(110, 150)


# NACLIP with 1 PAMR step: a halo of 16 px, cut at the tiles of 64 (10 steps, a halo of 160,
# would grow every tile to the whole image and take ten times as long)
@pytest.fixture(scope="module", params=[("naclip", {"pamr_steps": 1}), ("sclip", {})])
def pair(request):
    name, options = request.param
    tensor = Segmenter(None, "tiny-random", "cpu", method=name, **options)
    tiled = Segmenter(None, "tiny-random", "cpu", method=name, **options)
    tiled.method.map_bytes = 0  # every image through the map
    return tensor, tiled


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(PixelMap, "tile_size", property(lambda self: TILE))


def _clear(probs: np.ndarray) -> np.ndarray:
    """Pixels whose top two probabilities are apart by more than MARGIN."""
    top2 = np.sort(probs, axis=0)[-2:]
    return (top2[1] - top2[0]) > MARGIN


def test_probabilities_are_a_map_only_when_large(pair, image, small_tiles):
    tensor, tiled = pair
    vocab = tensor.vocabulary(CLASSES, background=["wall"])
    config = tensor.config()
    small = tensor.method.probabilities(image, vocab, tensor.models, config)
    big = tiled.method.probabilities(image, vocab, tiled.models, config)
    assert isinstance(small, torch.Tensor) and isinstance(big, PixelMap)
    assert big.shape == tuple(small.shape) == (5, *image.shape[:2])
    assert len(list(big.windows())) == 6  # 2 x 3 tiles of 64
    np.testing.assert_allclose(big.numpy(), small.numpy(), rtol=0, atol=2e-5)
    full = with_background(small, 4)
    mapped = with_background(big, 4)
    np.testing.assert_allclose(mapped.numpy(), full.numpy(), rtol=0, atol=2e-5)
    labels = tensor.method.predict(full, config, 4)
    clear = _clear(full.numpy())
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(tiled.method.predict(mapped, config, 4)[clear], labels[clear])
    np.testing.assert_allclose(
        label_probability(mapped, labels), label_probability(full, labels), rtol=0, atol=2e-5
    )


def test_segment_and_scores_agree(pair, image, small_tiles):
    tensor, tiled = pair
    options = dict(background=["wall"], prob_threshold=0.2)
    a = tensor.segment(image, CLASSES, **options)
    b = tiled.segment(image, CLASSES, **options)
    probs = tensor.pixel_probabilities(image, CLASSES, **options)
    np.testing.assert_allclose(
        tiled.pixel_probabilities(image, CLASSES, **options), probs, rtol=0, atol=2e-5
    )
    clear = _clear(probs) & (np.abs(probs.max(0) - 0.2) > MARGIN)
    np.testing.assert_array_equal(b.label_map[clear], a.label_map[clear])
    same = a.label_map == b.label_map
    np.testing.assert_allclose(b.confidence[same], a.confidence[same], rtol=0, atol=2e-5)
    # mask scores (prompted objects, refinement) from the map's tiles
    h, w = image.shape[:2]
    masks = np.zeros((3, h, w), bool)
    masks[0, :30, :], masks[1, 80:, :70], masks[2, 40:70, 90:140] = True, True, True
    objects = Masks(masks, np.ones(3, np.float32), masks_to_boxes(masks).astype(np.float32))
    np.testing.assert_allclose(
        tiled.score(objects, CLASSES, image), tensor.score(objects, CLASSES, image), atol=2e-5
    )


def test_area_rule_on_a_map(image, small_tiles):
    tensor = Segmenter(None, "tiny-random", "cpu", method="sclip")
    tiled = Segmenter(None, "tiny-random", "cpu", method="sclip")
    tiled.method.map_bytes = 0
    probs = tensor.pixel_probabilities(image, CLASSES)
    share = np.bincount(probs.argmax(0).ravel(), minlength=4) / probs[0].size
    order = np.sort(share)
    assert order[-2] - order[-3] > 0.02  # a clear cut keeping the two largest classes
    options = dict(area_threshold=float(order[-3] + order[-2]) / 2)
    a = tensor.segment(image, CLASSES, **options)
    b = tiled.segment(image, CLASSES, **options)
    kept = probs[np.argsort(share)[-2:]]
    assert len(np.unique(a.label_map)) == 2
    clear = np.abs(kept[0] - kept[1]) > MARGIN
    np.testing.assert_array_equal(b.label_map[clear], a.label_map[clear])


def test_output_sized_arrays_are_held_once(monkeypatch):
    """After a tiled map, segment() holds the output and a few bytes per pixel more: the
    prediction, its confidence and the fused arrays are not copied along the way (numpy's
    allocations, traced; the torch tiles are bounded by the map's work_bytes)."""
    tracemalloc = pytest.importorskip("tracemalloc")
    monkeypatch.setattr(PixelMap, "tile_size", property(lambda self: 128))
    seg = Segmenter(None, "tiny-random", "cpu", method="sclip")
    seg.method.map_bytes = 0
    image = _image(300, 400)
    seg.segment(image, CLASSES)  # imports, text embeddings
    seg._probs_cache = None
    tracemalloc.start()
    try:
        result = seg.segment(image, CLASSES)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = image.shape[0] * image.shape[1]
    # the image's copy (3 B), labels, confidence, segment map (4 B each), one byte per segment
    output = (3 + 4 + 4 + 4 + len(result.segments)) * pixels
    assert held < output + pixels  # nothing output-sized besides the result is left
    assert peak < held + 14 * pixels  # before: labels int64, copies, an owner map: +38 B/px
