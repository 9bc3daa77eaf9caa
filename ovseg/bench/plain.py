"""The plain SAM + CLIP pipeline that ``ovseg bench`` measures ovseg against, and the fixed
mask sets both sides score.

"Plain" is what users write themselves with the two libraries and nothing else:

- proposals: ``segment_anything.SamAutomaticMaskGenerator`` (its 32x32 grid and its default
  quality filters unless told otherwise), which upsamples every grid mask to the input size
  before filtering;
- scoring: one CLIP forward pass per mask, batch size 1: a PIL crop of the mask's box with the
  pixels outside the mask greyed (CLIP's mean colour), through the model's own open_clip
  preprocessing (resize, centre crop, normalise);
- fusion: masks painted largest first, each with its most probable class;
- a click: ``SamPredictor.predict`` with one point (best of SAM's three candidates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

MEAN_GREY = (123, 117, 104)  # CLIP's mean colour, 8-bit RGB


def label_components(
    label_map: np.ndarray, ignore: tuple[int, ...] = (), min_area: int = 1
) -> np.ndarray:
    """Connected components (4-connectivity) of each label value of an integer map (H, W).

    Returns bool (N, H, W): one mask per component of area >= ``min_area``, labels in
    ``ignore`` skipped, ordered by (label value, first pixel in raster order). Runs of equal
    labels per row are joined across rows with a union-find, so the cost is linear in the number
    of runs.
    """
    lab = np.asarray(label_map)
    if lab.ndim != 2:
        raise ValueError(f"label_map must be (H, W), got shape {lab.shape}")
    h, w = lab.shape
    change = np.ones((h, w), bool)
    change[:, 1:] = lab[:, 1:] != lab[:, :-1]
    rows, starts = np.nonzero(change)
    ends = np.append(starts[1:], w)
    ends[np.append(rows[1:] != rows[:-1], True)] = w
    values = lab[rows, starts]
    parent = np.arange(len(rows))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows, np.arange(h + 1))
    for r in range(1, h):
        a, a_end = row_first[r - 1], row_first[r]
        b, b_end = row_first[r], row_first[r + 1]
        while a < a_end and b < b_end:
            if values[a] == values[b] and starts[a] < ends[b] and starts[b] < ends[a]:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if ends[a] <= ends[b]:
                a += 1
            else:
                b += 1
    roots = np.array([find(i) for i in range(len(rows))], dtype=np.int64)
    comp = np.zeros((h, w), np.int64)
    for i in range(len(rows)):
        comp[rows[i], starts[i] : ends[i]] = roots[i]
    masks = []
    for root in sorted(set(roots.tolist()), key=lambda i: (values[i], rows[i], starts[i])):
        if values[root] in ignore:
            continue
        m = comp == root
        if m.sum() >= min_area:
            masks.append(m)
    return np.stack(masks) if masks else np.zeros((0, h, w), bool)


def synthetic_scene(seed: int, size: tuple[int, int] = (360, 480)) -> tuple[np.ndarray, np.ndarray]:
    """A generated road-like frame RGB uint8 (H, W, 3) and its label map int (H, W): sky,
    ground, a few buildings and cars as flat shapes with noise. For runs without CamVid."""
    rng = np.random.default_rng(seed)
    h, w = size
    lab = np.zeros((h, w), np.int64)
    lab[h // 2 :] = 1
    colours = [(135, 190, 235), (90, 90, 90)]
    for k in range(2 + rng.integers(3)):
        x0, bw = rng.integers(0, w - w // 8), rng.integers(w // 12, w // 3)
        lab[h // 5 + rng.integers(h // 5) : h // 2, x0 : x0 + bw] = 2 + k
        colours.append(tuple(int(c) for c in rng.integers(60, 200, 3)))
    ch, cw = max(2, h // 9), max(2, w // 7)
    for k in range(1 + rng.integers(4)):
        y0, x0 = rng.integers(h // 2, h - ch), rng.integers(0, w - cw)
        lab[y0 : y0 + ch, x0 : x0 + cw] = 10 + k
        colours.append(tuple(int(c) for c in rng.integers(0, 255, 3)))
    palette = np.zeros((lab.max() + 1, 3), np.uint8)
    for value, colour in zip(sorted(set(lab.ravel().tolist())), colours, strict=False):
        palette[value] = colour
    img = palette[lab].astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lab


@dataclass
class PlainPipeline:
    """SAM's automatic generator + per-mask CLIP crops, sharing the models ovseg uses.

    Args:
        sam: a ``segment_anything.modeling.Sam``.
        clip_model: an open_clip model (``encode_image``/``encode_text``).
        image_size, mean, std: the CLIP model's preprocessing constants.
        grid: keyword options for ``SamAutomaticMaskGenerator`` (``points_per_side``...).
    """

    sam: object
    clip_model: torch.nn.Module
    image_size: int
    mean: tuple
    std: tuple
    grid: dict = field(default_factory=dict)
    clip_calls: int = 0

    def __post_init__(self):
        import open_clip

        self.generator, self.predictor = self._sam_tools()
        self.preprocess = open_clip.image_transform(
            self.image_size, is_train=False, mean=self.mean, std=self.std
        )
        self.device = next(self.clip_model.parameters()).device

    def _sam_tools(self):
        """(automatic generator, predictor) of the plain side: segment_anything's."""
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        generator = SamAutomaticMaskGenerator(self.sam, output_mode="binary_mask", **self.grid)
        return generator, SamPredictor(self.sam)

    @torch.no_grad()
    def proposals(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Run the automatic generator. Returns (masks bool (N, H, W), encoder seconds, seconds
        for the rest of the generator); the encoder is timed inside by wrapping ``set_image``."""
        predictor = self.generator.predictor
        spent = [0.0]
        original = predictor.set_image

        def timed_set_image(*args, **kwargs):
            t0 = time.perf_counter()
            original(*args, **kwargs)
            _sync(self.device)
            spent[0] += time.perf_counter() - t0

        predictor.set_image = timed_set_image
        try:
            t0 = time.perf_counter()
            records = self.generator.generate(image)
            _sync(self.device)
            total = time.perf_counter() - t0
        finally:
            del predictor.set_image
        masks = (
            np.stack([r["segmentation"] for r in records])
            if records
            else np.zeros((0, *image.shape[:2]), bool)
        )
        return masks, spent[0], total - spent[0]

    @torch.no_grad()
    def text_features(self, classes: list[str]) -> torch.Tensor:
        import open_clip

        tokens = open_clip.tokenize([f"a photo of a {c}." for c in classes]).to(self.device)
        feats = self.clip_model.encode_text(tokens).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def score(self, image: np.ndarray, masks: np.ndarray, text: torch.Tensor) -> np.ndarray:
        """Class probabilities float32 (N, K): one CLIP pass per mask crop (batch size 1)."""
        pil = Image.fromarray(image)
        grey = Image.new("RGB", pil.size, MEAN_GREY)
        scale = float(self.clip_model.logit_scale.exp())
        out = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                out.append(np.full(len(text), 1.0 / len(text), np.float32))
                continue
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            region = Image.composite(pil, grey, Image.fromarray(mask)).crop(box)
            x = self.preprocess(region)[None].to(self.device)
            feat = self.clip_model.encode_image(x).float()
            self.clip_calls += 1
            feat = feat / feat.norm(dim=-1, keepdim=True)
            out.append((scale * feat @ text.T).softmax(-1)[0].cpu().numpy())
        return np.stack(out).astype(np.float32) if out else np.zeros((0, len(text)), np.float32)

    @staticmethod
    def fuse(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Label map int32 (H, W): masks painted largest first with their argmax class, -1 where
        no mask lies."""
        label = np.full(masks.shape[1:], -1, np.int32)
        for i in np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable"):
            label[masks[i]] = int(probs[i].argmax())
        return label

    @torch.no_grad()
    def click(
        self, point: tuple[float, float], image: np.ndarray, text: torch.Tensor
    ) -> np.ndarray:
        """One positive click on the image set on ``self.predictor``: SAM's best candidate and its
        class probabilities. Returns the mask bool (H, W)."""
        masks, scores, _ = self.predictor.predict(
            point_coords=np.array([point], np.float32),
            point_labels=np.array([1]),
            multimask_output=True,
        )
        mask = masks[int(np.argmax(scores))].astype(bool)  # SAM 2's predictor gives 0./1.
        self.score(image, mask[None], text)
        return mask


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
