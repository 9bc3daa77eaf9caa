"""Region scorers: turn masks of an image into CLIP embeddings (N, D), unit norm.

- :class:`CropScorer`: one CLIP image pass per mask, on a square crop around the mask with a
  context margin, pixels outside the mask greyed (CLIP's mean colour), blurred, or kept. The
  most faithful to CLIP's training distribution; cost grows with the number of masks.
- :class:`DenseScorer`: one CLIP pass per image; patch features from a ClearCLIP-style last
  block (query-query attention, no residual, no MLP) are average-pooled inside each mask.
  Cost independent of the number of masks; coarser for masks smaller than a patch.
- :class:`EnsembleScorer` (``"both"``): the normalised mean of the two.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.functional import gaussian_blur

from ovseg.scoring.backends import ClipBackend
from ovseg.structures import Masks, image_key

FILLS = ("grey", "blur", "none")


def _image_tensor(image: np.ndarray, device) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0


_MAX_SAMPLES = 16  # bilinear samples per crop pixel and axis (roi_align's adaptive default)
_MAX_ASPECT = 8  # the dense pass keeps at most this long-to-short ratio of the resized image


def _crop(x: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    """``roi_align`` (aligned) of ``rois`` (N, 5) to ``size`` x ``size``, with the adaptive
    sampling ratio capped at :data:`_MAX_SAMPLES` for boxes more than that many times the crop
    (roi_align's CPU kernel precomputes every sample, so a 30000-pixel box would need
    gigabytes); smaller boxes are sampled exactly as roi_align's default does."""
    side = torch.maximum(rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2])
    big = side > _MAX_SAMPLES * size
    if not bool(big.any()):
        return roi_align(x, rois, output_size=size, aligned=True)
    out = torch.empty((len(rois), x.shape[1], size, size), dtype=x.dtype, device=x.device)
    for part, ratio in ((~big, -1), (big, _MAX_SAMPLES)):
        if bool(part.any()):
            out[part] = roi_align(x, rois[part], size, sampling_ratio=ratio, aligned=True)
    return out


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """XYXY boxes (N, 4) -> square XYXY boxes around them, each side grown by ``margin`` of the
    longer side on both ends (the square may extend past the image)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + 2 * margin)
    side = np.maximum(side, 1.0)
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


class CropScorer:
    """Masked crops with context, batched through CLIP's image tower.

    Args:
        backend: the CLIP backend.
        margin: context around the mask's box, as a fraction of its longer side (each end).
        fill: what replaces pixels outside the mask: ``"grey"`` (CLIP's mean colour, i.e. zero
            after normalisation), ``"blur"`` (a Gaussian-blurred image), or ``"none"``.
        batch_size: crops per CLIP forward pass.
    """

    def __init__(
        self, backend: ClipBackend, margin: float = 0.1, fill: str = "grey", batch_size: int = 32
    ):
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.backend, self.margin, self.fill, self.batch_size = backend, margin, fill, batch_size

    @torch.inference_mode()
    def crops(self, image: np.ndarray, masks: Masks) -> torch.Tensor:
        """The CLIP inputs: float (N, 3, S, S) RGB in [0, 1], before normalisation."""
        dev = self.backend.device
        s = self.backend.image_size
        img = _image_tensor(image, dev)
        boxes = torch.as_tensor(
            square_boxes(masks.boxes, self.margin), dtype=torch.float32, device=dev
        )
        if self.fill == "blur":
            k = max(3, (min(image.shape[:2]) // 16) | 1)
            context = gaussian_blur(img, [k, k])
        else:
            context = img if self.fill == "none" else None
        mean = torch.tensor(self.backend.mean, device=dev).view(1, 3, 1, 1)
        out = []
        for start in range(0, len(masks), self.batch_size):
            b = boxes[start : start + self.batch_size]
            rois = torch.cat([torch.zeros(len(b), 1, device=dev), b], 1)
            crop = _crop(img, rois, s)
            m = torch.from_numpy(masks.masks[start : start + self.batch_size]).to(dev)
            idx = torch.cat([torch.arange(len(b), device=dev)[:, None].float(), b], 1)
            alpha = _crop(m[:, None].float(), idx, s)
            if context is not None:
                fill = _crop(context, rois, s)
                inside = _crop(torch.ones_like(img[:, :1]), rois, s)
                fill = fill + mean * (1 - inside)
            else:
                fill = mean.expand_as(crop)
            out.append(crop * alpha + fill * (1 - alpha))
        if not out:
            return torch.zeros((0, 3, s, s), device=dev)
        return torch.cat(out)

    @torch.inference_mode()
    def embed(self, image: np.ndarray, masks: Masks) -> torch.Tensor:
        """Region embeddings (N, D), unit norm."""
        crops = self.crops(image, masks)
        feats = [
            self.backend.encode_images(self.backend.normalize(crops[i : i + self.batch_size]))
            for i in range(0, len(crops), self.batch_size)
        ]
        return torch.cat(feats) if feats else torch.zeros((0, 1), device=self.backend.device)


class DenseScorer:
    """One dense CLIP pass per image, features average-pooled inside each mask.

    Args:
        backend: the CLIP backend (ViT image tower).
        short_side: the image is resized so its short side is this many pixels (rounded to the
            patch grid) before the dense pass; ``None`` uses twice the model's input size
            (448 for ViT-B/16: a 28-patch short side), the positional embedding interpolated.
        window: sliding-window inference as in the training-free literature: square windows of
            this many pixels (e.g. 224; cut to the image where it is smaller) over the resized
            image, ``stride`` apart (default half a window); each patch's feature is the
            normalised mean over the windows that cover it. ``None`` (default) runs the whole
            resized image in one pass.
        stride: the window step in pixels (a multiple of the patch size).
    """

    def __init__(
        self,
        backend: ClipBackend,
        short_side: int | None = None,
        window: int | None = None,
        stride: int | None = None,
    ):
        self.backend = backend
        self.short_side = short_side or 2 * backend.image_size
        p = self.patch_size()
        if window is not None and (window < p or window % p):
            raise ValueError(
                f"window must be a positive multiple of the patch size {p}, got {window}"
            )
        if window is not None and stride is None:
            stride = max(p, window // 2 // p * p)
        if window is not None and (stride < p or stride % p):
            raise ValueError(
                f"stride must be a positive multiple of the patch size {p}, got {stride}"
            )
        self.window, self.stride = window, stride
        self._cache: tuple[str, torch.Tensor] | None = None

    def patch_size(self) -> int:
        model = self.backend.model
        if hasattr(model, "visual") and hasattr(model.visual, "conv1"):
            return int(model.visual.conv1.kernel_size[0])
        return int(getattr(self.backend, "patch_size", 16))

    @torch.inference_mode()
    def feature_map(self, image: np.ndarray) -> torch.Tensor:
        """Patch embeddings (h, w, D), unit norm, cached for the last image."""
        key = image_key(image)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        p = self.patch_size()
        h, w = image.shape[:2]
        # Short side to ``short_side``, unless that makes the long side more than
        # _MAX_ASPECT times as long (a 30000 x 20 image); at least one patch either way.
        scale = min(self.short_side / min(h, w), _MAX_ASPECT * self.short_side / max(h, w))
        size = (max(p, round(h * scale / p) * p), max(p, round(w * scale / p) * p))
        img = F.interpolate(
            _image_tensor(image, self.backend.device),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        img = self.backend.normalize(img)
        feats = self.backend.dense_features(img)[0] if self.window is None else self._slide(img, p)
        self._cache = (key, feats)
        return feats

    def _slide(self, img: torch.Tensor, p: int) -> torch.Tensor:
        """Windowed dense features of a normalised (1, 3, H, W) image -> (H/p, W/p, D)."""
        _, _, h, w = img.shape
        wh, ww = min(self.window, h), min(self.window, w)  # a window never exceeds the image

        def starts(n: int, win: int) -> list[int]:
            return sorted({*range(0, n - win + 1, self.stride), n - win})

        total = counts = None
        for y in starts(h, wh):
            for x in starts(w, ww):
                f = self.backend.dense_features(img[:, :, y : y + wh, x : x + ww])[0]
                if total is None:
                    total = torch.zeros(h // p, w // p, f.shape[-1], device=f.device)
                    counts = torch.zeros(h // p, w // p, 1, device=f.device)
                total[y // p : (y + wh) // p, x // p : (x + ww) // p] += f
                counts[y // p : (y + wh) // p, x // p : (x + ww) // p] += 1
        return F.normalize(total / counts, dim=-1)

    @torch.inference_mode()
    def embed(self, image: np.ndarray, masks: Masks) -> torch.Tensor:
        feats = self.feature_map(image)
        fh, fw, d = feats.shape
        m = torch.from_numpy(masks.masks).to(feats.device)[:, None].float()
        weights = F.adaptive_avg_pool2d(m, (fh, fw)).flatten(1)
        pooled = weights @ feats.reshape(fh * fw, d) / weights.sum(1, keepdim=True).clamp(min=1e-8)
        return F.normalize(pooled, dim=-1)


class EnsembleScorer:
    """The normalised mean of crop and dense region embeddings."""

    def __init__(self, backend: ClipBackend, **crop_options):
        self.crop = CropScorer(backend, **crop_options)
        self.dense = DenseScorer(backend)

    def embed(self, image: np.ndarray, masks: Masks) -> torch.Tensor:
        return F.normalize(self.crop.embed(image, masks) + self.dense.embed(image, masks), dim=-1)


SCORERS = {"crop": CropScorer, "dense": DenseScorer, "both": EnsembleScorer}


def make_scorer(kind: str, backend: ClipBackend, **options):
    """``"crop" | "dense" | "both"`` -> a scorer with ``embed(image, masks) -> (N, D)``."""
    if kind not in SCORERS:
        raise ValueError(f"scorer must be one of {sorted(SCORERS)}, got {kind!r}")
    if kind != "crop" and not backend.supports_dense:
        raise ValueError(
            f"scorer {kind!r} needs a CLIP ViT image tower with a class token; "
            f"{backend.name} has none: use scorer='crop'"
        )
    import inspect

    cls = SCORERS[kind]
    takes = CropScorer if kind == "both" else cls  # "both" passes its options to the crop scorer
    allowed = [
        n for n in inspect.signature(takes.__init__).parameters if n not in ("self", "backend")
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for scorer {kind!r}; it takes {allowed or 'no options'}"
        )
    return cls(backend, **options)
