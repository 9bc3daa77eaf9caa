"""Tests for ovseg.viz: palette, colorize, overlay with legend, confidence rendering."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ovseg.viz import colorize, confidence_image, overlay, palette


def _scene(h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = np.full((h, w), -1, np.int32)
    labels[5:20, 5:30] = 0
    labels[25:, 30:] = 1
    labels[0:4, :] = 2
    return image, labels


@pytest.mark.parametrize("n", [0, 1, 21, 255, 1000])
def test_palette_distinct_deterministic_no_black(n: int) -> None:
    pal = palette(n)
    assert pal.shape == (n, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal}) == n
    assert not (pal == 0).all(axis=1).any()
    np.testing.assert_array_equal(pal, palette(n))


def test_palette_is_prefix_stable() -> None:
    np.testing.assert_array_equal(palette(10), palette(30)[:10])


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_palette_bad_n(bad: object, exc: type) -> None:
    with pytest.raises(exc):
        palette(bad)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.data())
def test_colorize_uses_palette(k: int, data: st.DataObject) -> None:
    labels = np.array(data.draw(st.lists(st.integers(-1, k - 1), min_size=6, max_size=6)))
    labels = labels.reshape(2, 3)
    out = colorize(labels, k)
    pal = palette(k)
    for (y, x), v in np.ndenumerate(labels):
        expected = (0, 0, 0) if v < 0 else tuple(pal[v])
        assert tuple(out[y, x]) == expected


def test_colorize_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        colorize(np.array([[0, 2]]), 2)
    with pytest.raises(ValueError, match="integers"):
        colorize(np.zeros((2, 2), np.float32), 2)


def test_overlay_without_legend_same_size_and_unlabeled_unchanged() -> None:
    image, labels = _scene()
    out = overlay(image, labels, ["a", "b", "c"], alpha=0.5, legend=False)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    assert out.size == (image.shape[1], image.shape[0])
    arr = np.asarray(out)
    unlabeled = labels < 0
    np.testing.assert_array_equal(arr[unlabeled], image[unlabeled])
    assert (arr[~unlabeled] != image[~unlabeled]).any()


def test_overlay_blend_value_inside_region() -> None:
    image, labels = _scene()
    out = np.asarray(overlay(image, labels, ["a", "b", "c"], alpha=0.25, legend=False))
    y, x = 10, 15  # interior of class 0, away from its boundary
    expected = np.round(0.75 * image[y, x] + 0.25 * palette(3)[0].astype(float))
    np.testing.assert_array_equal(out[y, x], expected.astype(np.uint8))


def test_overlay_alpha_zero_keeps_interiors_boundaries_optional() -> None:
    image, labels = _scene()
    plain = overlay(image, labels, ["a", "b", "c"], alpha=0.0, legend=False, boundaries=False)
    np.testing.assert_array_equal(np.asarray(plain), image)
    edged = np.asarray(overlay(image, labels, ["a", "b", "c"], alpha=0.0, legend=False))
    assert tuple(edged[5, 10]) == tuple(palette(3)[0])  # top edge of class 0
    np.testing.assert_array_equal(edged[10, 15], image[10, 15])


def test_overlay_hidden_classes_not_coloured() -> None:
    image, labels = _scene()
    out = np.asarray(overlay(image, labels, ["a", "b", "c"], legend=False, hidden={1}))
    np.testing.assert_array_equal(out[labels == 1], image[labels == 1])
    assert (out[labels == 0] != image[labels == 0]).any()


def test_overlay_confidence_fades_colour() -> None:
    image, labels = _scene()
    conf = np.zeros(labels.shape, np.float32)
    conf[labels == 2] = 1.0
    out = np.asarray(
        overlay(image, labels, ["a", "b", "c"], legend=False, boundaries=False, confidence=conf)
    )
    np.testing.assert_array_equal(out[labels == 0], image[labels == 0])
    assert (out[labels == 2] != image[labels == 2]).any()


def test_overlay_legend_adds_panel_listing_present_classes() -> None:
    image, labels = _scene()
    plain = overlay(image, labels, ["a", "b", "c", "absent"], legend=False)
    with_legend = overlay(image, labels, ["a", "b", "c", "absent"], legend=True)
    assert with_legend.width > plain.width
    assert with_legend.height >= plain.height
    arr = np.asarray(with_legend)
    np.testing.assert_array_equal(arr[: image.shape[0], : image.shape[1]], np.asarray(plain))
    panel = arr[:, image.shape[1] :].reshape(-1, 3)
    colours = {tuple(c) for c in panel}
    pal = palette(4)
    for present in (0, 1, 2):
        assert tuple(pal[present]) in colours
    assert tuple(pal[3]) not in colours


def test_overlay_legend_hides_hidden_and_grows_tall() -> None:
    h, w, k = 20, 30, 12
    image = np.zeros((h, w, 3), np.uint8)
    labels = (np.arange(h * w).reshape(h, w) % k).astype(np.int32)
    out = overlay(image, labels, [f"class {i}" for i in range(k)], hidden={5})
    assert out.height > h  # twelve rows do not fit in 20 pixels
    panel = {tuple(c) for c in np.asarray(out)[:, w:].reshape(-1, 3)}
    assert tuple(palette(k)[5]) not in panel
    assert tuple(palette(k)[4]) in panel


def test_overlay_accepts_pil_and_validates() -> None:
    image, labels = _scene()
    out = overlay(Image.fromarray(image), labels, ["a", "b", "c"], legend=False)
    assert out.size == (60, 40)
    with pytest.raises(ValueError, match="shape"):
        overlay(image, labels[:10], ["a", "b", "c"])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, labels, ["a", "b", "c"], alpha=1.5)
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        overlay(image, labels, ["a", "b"])


def test_confidence_image_grey_and_colormap() -> None:
    conf = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    grey = confidence_image(conf)
    assert grey.mode == "L" and grey.size == (4, 3)
    np.testing.assert_array_equal(np.asarray(grey), np.round(conf * 255).astype(np.uint8))
    coloured = confidence_image(conf, cmap="viridis")
    assert coloured.mode == "RGB" and coloured.size == (4, 3)
    with pytest.raises(ValueError, match="colormap"):
        confidence_image(conf, cmap="no-such-map")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        confidence_image(conf * 2)
