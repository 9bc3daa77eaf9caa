"""Tests for ovseg.image.load_image: every input kind and every bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from ovseg.image import load_image, to_pil


def _rgb(h: int = 6, w: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags.c_contiguous


# ---------------------------------------------------------------- arrays


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_uint8_rgb_round_trips_unchanged(arr: np.ndarray) -> None:
    out = load_image(arr)
    _check(out, arr.shape[:2])
    np.testing.assert_array_equal(out, arr)
    assert not np.shares_memory(out, arr)


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 10), st.integers(1, 10))))
def test_grey_uint8_repeats_channels(arr: np.ndarray) -> None:
    out = load_image(arr)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], arr)
    np.testing.assert_array_equal(load_image(arr[..., None]), out)


def test_rgba_array_drops_alpha() -> None:
    rgb = _rgb()
    alpha = np.zeros(rgb.shape[:2] + (1,), np.uint8)
    np.testing.assert_array_equal(load_image(np.concatenate([rgb, alpha], axis=2)), rgb)


def test_non_contiguous_array() -> None:
    rgb = _rgb(8, 10)
    view = rgb[::2, ::-1]
    out = load_image(view)
    _check(out, view.shape[:2])
    np.testing.assert_array_equal(out, view)


def test_uint16_scaled_not_clipped() -> None:
    arr = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    out = load_image(arr)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, (5, 4, 3), elements=st.floats(0.0, 1.0)))
def test_float_scaled_and_rounded(arr: np.ndarray) -> None:
    np.testing.assert_array_equal(load_image(arr), np.round(arr * 255).astype(np.uint8))


def test_float_from_uint8_is_exact() -> None:
    rgb = _rgb()
    np.testing.assert_array_equal(load_image(rgb.astype(np.float32) / 255), rgb)


@pytest.mark.parametrize("bad", [1.5, -0.1, 255.0])
def test_float_out_of_range_names_range(bad: float) -> None:
    arr = np.full((3, 3, 3), 0.5)
    arr[1, 1, 1] = bad
    with pytest.raises(ValueError, match=r"\[0, 1\].*found"):
        load_image(arr)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_not_finite(bad: float) -> None:
    arr = np.zeros((3, 3), np.float32)
    arr[0, 0] = bad
    with pytest.raises(ValueError, match="finite"):
        load_image(arr)


@pytest.mark.parametrize(
    "shape", [(0,), (0, 0), (0, 5, 3), (5, 0), (4, 4, 2), (4, 4, 5), (2, 4, 4, 3), (7,)]
)
def test_bad_shapes_name_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re_shape(shape)):
        load_image(np.zeros(shape, np.uint8))


def re_shape(shape: tuple[int, ...]) -> str:
    return str(shape).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint32, np.complex64])
def test_other_dtypes_type_error(dtype: type) -> None:
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        load_image(np.zeros((3, 3, 3), dtype=dtype))


def test_bool_array_rejected() -> None:
    with pytest.raises(TypeError, match="mask"):
        load_image(np.ones((3, 3), bool))


@pytest.mark.parametrize("bad", [None, 3, [[1, 2], [3, 4]], b"bytes", object()])
def test_other_types_name_the_type(bad: object) -> None:
    with pytest.raises(TypeError, match=type(bad).__name__):
        load_image(bad)


# ---------------------------------------------------------------- PIL images


def test_pil_rgb_matches_array() -> None:
    rgb = _rgb()
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)), rgb)
    np.testing.assert_array_equal(np.asarray(to_pil(rgb)), rgb)


def test_pil_rgba_drops_alpha() -> None:
    rgba = np.dstack([_rgb(), np.full((6, 9), 7, np.uint8)])
    np.testing.assert_array_equal(load_image(Image.fromarray(rgba)), rgba[..., :3])


def test_pil_la_and_l_and_1() -> None:
    grey = _rgb()[..., 0]
    la = Image.fromarray(np.dstack([grey, np.zeros_like(grey)]))
    assert la.mode == "LA"
    np.testing.assert_array_equal(load_image(la)[..., 1], grey)
    np.testing.assert_array_equal(load_image(Image.fromarray(grey))[..., 2], grey)
    bits = Image.fromarray(grey > 127)
    assert bits.mode == "1"
    np.testing.assert_array_equal(load_image(bits)[..., 0], np.where(grey > 127, 255, 0))


def test_pil_palette_with_and_without_transparency() -> None:
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    pal = [10, 20, 30, 200, 100, 50, 0, 255, 0]
    im = Image.fromarray(idx).convert("P")
    im.putpalette(pal)
    expected = np.array(pal, np.uint8).reshape(-1, 3)[idx]
    np.testing.assert_array_equal(load_image(im), expected)
    im.info["transparency"] = 1
    np.testing.assert_array_equal(load_image(im), expected)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_pil_16bit_scaled(mode: str) -> None:
    arr = np.array([[0, 257, 65535]], np.uint16)
    im = Image.fromarray(arr).convert(mode) if mode == "I" else Image.fromarray(arr)
    assert im.mode == mode
    np.testing.assert_array_equal(load_image(im)[0, :, 0], [0, 1, 255])


def test_pil_mode_i_out_of_16bit_range() -> None:
    im = Image.fromarray(np.array([[-5, 70000]], np.int32))
    assert im.mode == "I"
    with pytest.raises(ValueError, match="65535"):
        load_image(im)


def test_pil_float_mode() -> None:
    arr = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(load_image(Image.fromarray(arr))[0, :, 0], [0, 128, 255])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(Image.fromarray(arr * 255))


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV"])
def test_pil_colour_spaces_convert_to_rgb(mode: str) -> None:
    rgb = Image.new("RGB", (5, 4), (200, 30, 60))
    converted = rgb.convert(mode) if mode != "LAB" else Image.new("LAB", (5, 4), (255, 128, 128))
    out = load_image(converted)
    _check(out, (4, 5))
    expected = np.asarray(converted.convert("RGB"))
    np.testing.assert_array_equal(out, expected)


def test_pil_exif_orientation_applied() -> None:
    im = Image.fromarray(_rgb(4, 10))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif)
    out = load_image(Image.open(buf))
    assert out.shape == (10, 4, 3)


# ---------------------------------------------------------------- files


def test_path_and_str_png(tmp_path: Path) -> None:
    rgb = _rgb()
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)
    np.testing.assert_array_equal(load_image(str(path)), rgb)


def test_rgba_and_palette_files(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(), np.full((6, 9), 0, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[..., :3])
    pal = Image.fromarray(_rgb()).quantize(8)
    pal.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


def test_cmyk_jpeg_file(tmp_path: Path) -> None:
    Image.new("CMYK", (7, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    _check(out, (5, 7))
    assert out[2, 3, 0] > 200 and out[2, 3, 1] < 60 and out[2, 3, 2] < 60  # red


def test_16bit_png_file(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 65535], [257, 514, 40000]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    expected = np.round(arr / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)


def test_exif_rotated_jpeg_is_transposed(tmp_path: Path) -> None:
    im = Image.fromarray(_rgb(8, 16))
    exif = im.getexif()
    exif[0x0112] = 8  # rotate 270 degrees
    im.save(tmp_path / "r.jpg", exif=exif)
    with Image.open(tmp_path / "r.jpg") as stored:
        assert stored.size == (16, 8)
    assert load_image(tmp_path / "r.jpg").shape == (16, 8, 3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="fake.png") as info:
        load_image(path)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match=f"cut.{fmt.lower()}") as info:
        load_image(path)
    assert info.value.__cause__ is not None


# ---------------------------------------------------------------- tensors


def test_tensor_chw_and_hwc_uint8() -> None:
    rgb = _rgb(5, 7)
    hwc = torch.from_numpy(rgb)
    np.testing.assert_array_equal(load_image(hwc), rgb)
    np.testing.assert_array_equal(load_image(hwc.permute(2, 0, 1)), rgb)


def test_tensor_float_and_grey() -> None:
    rgb = _rgb(5, 7)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(load_image(chw), rgb)
    grey = torch.from_numpy(rgb[..., 0])
    np.testing.assert_array_equal(load_image(grey[None])[..., 2], rgb[..., 0])
    np.testing.assert_array_equal(load_image(grey)[..., 1], rgb[..., 0])


def test_tensor_requires_grad_half() -> None:
    t = torch.full((3, 4, 5), 0.5, dtype=torch.float16, requires_grad=True)
    assert load_image(t).shape == (4, 5, 3)


def test_tensor_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 5\)"):
        load_image(torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(torch.full((3, 4, 5), 2.0))
    with pytest.raises(TypeError, match="int64"):
        load_image(torch.zeros(3, 4, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="mask"):
        load_image(torch.zeros(4, 5, dtype=torch.bool))
