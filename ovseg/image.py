"""Image input: turn a path, a PIL image, a numpy array or a torch tensor into RGB uint8.

Every entry point of ovseg calls :func:`load_image` once, so the rest of the
package only ever sees a C-contiguous ``uint8`` array of shape ``(H, W, 3)``.

Conversion rules (one rule per input kind, no guessing from pixel values):

- Paths are opened with Pillow and fully decoded, so truncated files fail here.
  Multi-frame files (GIF, TIFF) give their first frame. EXIF orientation is
  applied to files and to PIL images (``ImageOps.exif_transpose``).
- Alpha is **dropped**, not composited: the stored colour channels are kept as
  they are (RGBA, LA, PA, palette images with transparency, premultiplied
  modes). Composite beforehand if a background colour matters.
- Greyscale (``L``, ``1``, ``(H, W)``, ``(H, W, 1)``) is repeated to 3 channels.
- 16-bit integer data (``uint16`` arrays, PIL ``I;16*`` and ``I`` images with
  values in ``[0, 65535]``) is scaled to 8 bits, ``round(v * 255 / 65535)``.
- Float data (arrays, tensors, PIL ``F`` images) must be finite and in
  ``[0, 1]``; it is scaled by 255 and rounded.
- ``bool`` arrays are rejected (they are masks, not images).
- Other PIL modes (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``P``) are converted
  with Pillow's own colour conversion.
- Torch tensors: ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with ``C`` in
  ``{1, 3, 4}``. A 3-D tensor is read as CHW when its first dimension is 1, 3
  or 4 and its last is not 3 or 4; otherwise as HWC. dtype ``uint8`` or float.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = ["load_image", "to_pil"]

_ALLOWED = "a path, a PIL.Image, a numpy array or a torch tensor"


def load_image(image: Any) -> np.ndarray:
    """Load ``image`` as an RGB ``uint8`` array of shape ``(H, W, 3)``, C-contiguous.

    Args:
        image: a file path (``str`` or ``os.PathLike``); a ``PIL.Image.Image`` of
            any mode; a numpy array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
            ``(H, W, 4)`` of dtype ``uint8``, ``uint16`` or float in ``[0, 1]``;
            or a torch tensor (see the module docstring for the layout rule).

    Returns:
        A new array the caller may modify; it never aliases the input.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a directory, an unreadable or truncated file, a bad shape,
            or float values outside ``[0, 1]`` or not finite.
        TypeError: an unsupported input type or dtype.
    """
    if isinstance(image, (str, os.PathLike)):
        return _load_path(Path(image))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if _is_tensor(image):
        return _from_array(_tensor_to_hwc(image), what="tensor")
    kind = f"{type(image).__module__}.{type(image).__qualname__}"
    raise TypeError(f"image must be {_ALLOWED}; got {kind}")


def to_pil(image: Any) -> Image.Image:
    """Return ``image`` (anything :func:`load_image` accepts) as an RGB ``PIL.Image``."""
    return Image.fromarray(load_image(image))


def _load_path(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"image path is a directory, not a file: {path}")
    # Opening the file ourselves lets PermissionError and friends propagate as
    # they are; only decoding errors become ValueError.
    with open(path, "rb") as fh:
        try:
            with Image.open(fh) as im:
                im.load()  # full decode: truncated data raises here
                return _from_pil(im)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image file {path}: {e}") from e


def _from_pil(im: Image.Image) -> np.ndarray:
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "RGB":
        return _from_array(np.asarray(im))
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(
                "PIL mode 'I' image must hold values in [0, 65535] (16-bit); "
                f"found [{arr.min()}, {arr.max()}]"
            )
        return _from_array(arr.astype(np.uint16))
    if mode == "F":
        return _from_array(np.asarray(im), what="PIL 'F' image")
    if mode in ("L", "1"):
        return _from_array(np.asarray(im.convert("L")))
    if mode in ("LA", "La"):
        return _from_array(np.asarray(im.getchannel("L")))
    if mode in ("RGBA", "RGBa", "RGBX", "PA") or (mode == "P" and "transparency" in im.info):
        return _from_array(np.asarray(im.convert("RGBA"))[..., :3])
    try:
        return _from_array(np.asarray(im.convert("RGB")))
    except ValueError as e:
        raise ValueError(f"cannot convert PIL image of mode {mode!r} to RGB: {e}") from e


def _from_array(arr: np.ndarray, what: str = "array") -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise ValueError(
            f"{what} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {arr.shape}")
    arr = _to_uint8(arr, what)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.array(arr, dtype=np.uint8, order="C", copy=True)


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    dtype = arr.dtype
    if dtype == np.uint8:
        return arr
    if dtype == np.uint16 or (dtype.kind == "u" and dtype.itemsize == 2):
        return np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"float {what} must be finite; it holds NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float {what} must be in [0, 1]; found values in [{lo:g}, {hi:g}] "
                "(divide 0-255 data by 255, or pass uint8)"
            )
        return np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
    if dtype == np.bool_:
        raise TypeError(
            f"bool {what} looks like a mask, not an image; "
            "use mask.astype(np.uint8) * 255 to view it as greyscale"
        )
    raise TypeError(
        f"{what} dtype must be uint8, uint16 or float in [0, 1]; got {dtype} "
        "(convert with .astype(np.uint8) if the values are 0-255)"
    )


def _is_tensor(obj: Any) -> bool:
    if not type(obj).__module__.startswith("torch"):
        return False
    import torch

    return isinstance(obj, torch.Tensor)


def _tensor_to_hwc(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bool:
        raise TypeError("bool tensor looks like a mask, not an image")
    if t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype != torch.uint8:
        raise TypeError(f"tensor dtype must be uint8 or floating point in [0, 1]; got {t.dtype}")
    if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (3, 4):
        t = t.permute(1, 2, 0)
    elif t.ndim not in (2, 3):
        raise ValueError(
            f"tensor must have shape (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; "
            f"got shape {tuple(t.shape)}"
        )
    return t.contiguous().numpy()
