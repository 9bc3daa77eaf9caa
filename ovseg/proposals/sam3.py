"""SAM 3 on ``transformers``: the model with its processor, its instances, and the rules that
turn one prompt's detector outputs into per-pixel probabilities and deduplicated instances.

:class:`Sam3Bundle` holds a ``transformers`` SAM 3 model, its ``Sam3Processor`` and a cache of
image features shared by text prompts (:class:`~ovseg.proposals.sam3_detector.Sam3Detector`)
and point/box/mask prompts (:class:`~ovseg.proposals.sam3_tracker.Sam3TrackerProposer`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.structures import Masks, image_key

__all__ = [
    "DETECTOR_TYPES",
    "MODEL_TYPES",
    "Detection",
    "Sam3Bundle",
    "Sam3Instances",
    "dedup",
    "dense_map",
    "is_sam3_model",
]

DETECTOR_TYPES = ("Sam3Model", "Sam3LiteTextModel")
"""``transformers`` classes of SAM 3's detector (text and box prompts -> instances)."""
MODEL_TYPES = ("Sam3VideoModel", *DETECTOR_TYPES)
"""``transformers`` classes ovseg runs as SAM 3 (the video model holds detector and tracker)."""
TEXT_TOKENS = 32


def is_sam3_model(model) -> bool:
    """Whether ``model`` is a :class:`Sam3Bundle` or a ``transformers`` SAM 3 model."""
    return isinstance(model, Sam3Bundle) or type(model).__name__ in MODEL_TYPES


class Sam3Bundle(torch.nn.Module):
    """A SAM 3 model with its processor, and a cache of image features shared by its users.

    Args:
        model: a ``transformers`` ``Sam3VideoModel`` (detector, tracker and the tracker's neck
            over the detector's ViT) or a detector alone (``Sam3Model``, ``Sam3LiteTextModel``:
            text prompts only).
        processor: its ``Sam3Processor`` (image processor and tokenizer).
        name: how the model was named, for messages.
        cache_size: image features kept (an LRU keyed by image content).
    """

    def __init__(self, model, processor, name: str = "sam3", cache_size: int = 2):
        super().__init__()
        if type(model).__name__ not in MODEL_TYPES:
            raise TypeError(f"model must be one of {MODEL_TYPES}, got {type(model).__name__}")
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self.lock = threading.RLock()
        self.encoder_calls = 0

    def __repr__(self) -> str:
        return f"Sam3Bundle({self.name!r}, {type(self.model).__name__}, side={self.side})"

    @property
    def detector(self):
        """The detector (``Sam3Model`` or ``Sam3LiteTextModel``)."""
        return self.model.detector_model if self.has_tracker else self.model

    @property
    def has_tracker(self) -> bool:
        """Whether the model holds SAM 3's tracker (points, boxes, masks, video)."""
        return type(self.model).__name__ == "Sam3VideoModel"

    @property
    def side(self) -> int:
        """Side of the square model input in pixels (1008 for the official model)."""
        return int(self.processor.image_processor.size["height"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        with self.lock:
            self._cache.clear()

    def encode(self, image: np.ndarray) -> tuple[str, object, tuple[int, int]]:
        """``(key, vision, (H, W))`` for RGB uint8 ``image``: ``vision`` is the detector's
        ``get_vision_features`` output (``last_hidden_state`` of the ViT, ``fpn_hidden_states``
        and ``fpn_position_encoding``) on the official preprocessing, cached by content."""
        image = check_image(image)
        key = image_key(image)
        with self.lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return key, *self._cache[key]
            inputs = self.processor.image_processor(images=image, return_tensors="pt")
            detector = self.detector
            pixels = inputs["pixel_values"].to(self.device)
            with torch.inference_mode():
                vision = detector.get_vision_features(pixel_values=pixels)
            self.encoder_calls += 1
            self._cache[key] = (vision, (int(image.shape[0]), int(image.shape[1])))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return key, *self._cache[key]


def check_image(image) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` array, or a clear error."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: {image.shape}")
    return image


@dataclass
class Sam3Instances:
    """Instances of text prompts on one image.

    Attributes:
        class_index: int64 (N,), the entry (class) each instance belongs to.
        score: float32 (N,) in [0, 1], ``sigmoid(logit) x sigmoid(presence)``.
        box: float32 (N, 4), SAM 3's predicted box, XYXY pixels of the input image.
        mask: bool (N, H, W) at the input size.
        query_index: int64 (N,), the prompt (synonym) that found it.
    """

    class_index: np.ndarray
    score: np.ndarray
    box: np.ndarray
    mask: np.ndarray
    query_index: np.ndarray

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def __getitem__(self, index) -> Sam3Instances:
        index = np.atleast_1d(np.arange(len(self))[index])
        return Sam3Instances(*(a[index] for a in self._arrays()))

    def _arrays(self):
        return self.class_index, self.score, self.box, self.mask, self.query_index

    def to_masks(self) -> Masks:
        """:class:`~ovseg.structures.Masks` of the instances (scores: the instance scores;
        boxes: derived from the masks, ovseg's convention)."""
        return Masks.from_masks(self.mask, self.score)


@dataclass
class Detection:
    """One prompt's detector outputs on one image, at the model's mask resolution: the kept
    queries' raw outputs (for the official post-processing) and two per-pixel maps."""

    logits: torch.Tensor  # (n,) kept queries' logits
    boxes: torch.Tensor  # (n, 4) normalised XYXY
    masks: torch.Tensor  # (n, h, w) mask logits
    presence: torch.Tensor  # (1,) presence logit
    instance_map: torch.Tensor  # (h, w): max over all queries of score x sigmoid(mask logit)
    semantic_map: torch.Tensor  # (h, w): sigmoid(presence) x sigmoid(semantic logit)


def dense_map(detections, owners, num_entries: int, size, semantic: bool = True) -> torch.Tensor:
    """Per-pixel probabilities float32 (E, H, W) from each prompt's detector outputs.

    For prompt q at pixel x of the model's mask grid (288x288 for the official model):
    ``p_q(x) = max(max_i s_i * sigmoid(m_i(x)), sigmoid(presence) * sigmoid(sem(x)))`` over all
    of its DETR queries i (score ``s_i = sigmoid(logit_i) * sigmoid(presence)``, mask logits
    ``m_i``) and the semantic head ``sem`` (dropped with ``semantic=False``); an entry takes the
    max over its prompts (synonyms); the (E, h, w) map is resized bilinearly to ``size``.
    """
    first = detections[0].instance_map
    grid = first.new_zeros((num_entries, *first.shape))
    for q, d in enumerate(detections):
        p = torch.maximum(d.instance_map, d.semantic_map) if semantic else d.instance_map
        grid[owners[q]] = torch.maximum(grid[owners[q]], p)
    with torch.inference_mode():
        up = F.interpolate(grid[None], size=tuple(size), mode="bilinear", align_corners=False)
        return up[0].clamp(0.0, 1.0).float()


def dedup(found: Sam3Instances, num_classes: int, iou: float) -> np.ndarray:
    """bool (N,): False for an instance covered (mask IoU >= ``iou``) by a higher-scoring one of
    another prompt of its entry or of a background entry (``>= num_classes``)."""
    n = len(found)
    keep = np.ones(n, bool)
    if n < 2 or iou >= 1.0:
        return keep
    area = found.mask.reshape(n, -1).sum(1)
    order = np.argsort(-found.score, kind="stable")
    for rank, i in enumerate(order):
        for j in order[:rank]:
            if not keep[j] or found.query_index[j] == found.query_index[i]:
                continue
            same = found.class_index[j] == found.class_index[i]
            if not same and found.class_index[j] < num_classes:
                continue
            inter = np.logical_and(found.mask[i], found.mask[j]).sum()
            union = area[i] + area[j] - inter
            if union > 0 and inter / union >= iou:
                keep[i] = False
                break
    return keep


def check_queries(queries) -> list[str]:
    if isinstance(queries, str):
        raise TypeError(f"queries must be a list of strings, not one string: [{queries!r}]")
    queries = list(queries)
    if not queries:
        raise ValueError("queries is empty: give at least one text prompt")
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"queries must be non-blank strings, got {q!r}")
    return queries


def check_owners(owners, n: int) -> tuple[np.ndarray, int]:
    if owners is None:
        return np.arange(n), n
    owners = np.asarray(owners)
    if owners.shape != (n,) or not np.issubdtype(owners.dtype, np.integer) or owners.min() < 0:
        raise ValueError(f"owners must be {n} ints >= 0 (one entry per query), got {owners!r}")
    return owners.astype(np.int64), int(owners.max()) + 1


def check_unit(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
