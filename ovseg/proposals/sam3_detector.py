"""SAM 3's detector on text prompts: every instance of every prompt, the image encoded once.

For one prompt the official ``transformers`` pipeline is ``processor(images=image,
text=prompt)`` -> ``Sam3Model(**inputs)`` -> ``processor.post_process_instance_segmentation(
outputs, threshold, mask_threshold, target_sizes)``: instances whose score ``sigmoid(logit) x
sigmoid(presence)`` is above ``threshold``, masks ``sigmoid(mask logits)`` resized bilinearly to
the image and kept above ``mask_threshold``, boxes XYXY in pixels.

:class:`Sam3Detector` computes the same for K prompts at once: the image processor and the
vision encoder run once per image (cached in the :class:`~ovseg.proposals.sam3.Sam3Bundle`),
the text encoder once per prompt string (cached), and the rest of the detector (DETR encoder and
decoder, scoring, mask decoder) on ``batch_size`` prompts per forward with the image features
broadcast; each prompt's outputs then go through the official post-processing function
unchanged. With ``batch_size=1`` every number is the official pipeline's bit for bit (the same
operations on the same tensors); larger batches change float32 rounding only (about 1e-6 on the
logits).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ovseg.proposals.sam3 import (
    TEXT_TOKENS,
    Detection,
    Sam3Bundle,
    Sam3Instances,
    check_owners,
    check_queries,
    check_unit,
    dedup,
    dense_map,
)

__all__ = ["Sam3Detector"]


class Sam3Detector:
    """SAM 3's detector on text prompts, one image at a time (see the module docstring).

    Args:
        sam: a :class:`Sam3Bundle`.
        batch_size: prompts per detector forward (>= 1; a memory and speed knob; 1 gives the
            official pipeline's numbers bit for bit).
        text_cache_size: prompt embeddings kept (an LRU keyed by the prompt string).
    """

    def __init__(self, sam: Sam3Bundle, batch_size: int = 8, text_cache_size: int = 1024):
        if not isinstance(sam, Sam3Bundle):
            raise TypeError(f"sam must be a Sam3Bundle, got {type(sam).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.sam = sam
        self.batch_size = batch_size
        self.text_cache_size = text_cache_size
        self._text: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._results: OrderedDict[tuple, list[Detection]] = OrderedDict()
        self.lock = threading.RLock()
        self.text_calls = 0
        self.detector_calls = 0

    def clear_cache(self) -> None:
        """Forget cached prompt embeddings, detections and image features."""
        with self.lock:
            self._text.clear()
            self._results.clear()
            self.sam.clear_cache()

    def text_features(self, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, mask)``: the text encoder's projected features float (Q, 32, D) and the
        attention mask int64 (Q, 32) of each prompt, tokenised as ``Sam3Processor`` does."""
        with self.lock:
            missing = [q for q in dict.fromkeys(queries) if q not in self._text]
            tokenizer = self.sam.processor.tokenizer
            device = self.sam.device
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                tokens = [
                    tokenizer(q, padding="max_length", max_length=TEXT_TOKENS, return_tensors="pt")
                    for q in chunk
                ]
                for q, t in zip(chunk, tokens, strict=True):
                    if t["input_ids"].shape[1] != TEXT_TOKENS:
                        raise ValueError(
                            f"prompt {q!r} is {t['input_ids'].shape[1]} tokens long; SAM 3's text "
                            f"encoder takes at most {TEXT_TOKENS}"
                        )
                ids = torch.cat([t["input_ids"] for t in tokens]).to(device)
                mask = torch.cat([t["attention_mask"] for t in tokens]).to(device)
                with torch.inference_mode():
                    out = self.sam.detector.get_text_features(input_ids=ids, attention_mask=mask)
                self.text_calls += 1
                for i, q in enumerate(chunk):
                    self._text[q] = (out.pooler_output[i], mask[i])
            for q in queries:
                self._text.move_to_end(q)
            rows = [self._text[q] for q in queries]
            while len(self._text) > max(self.text_cache_size, len(queries)):
                self._text.popitem(last=False)
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def detect(self, image: np.ndarray, queries, threshold: float = 0.5) -> list[Detection]:
        """Each prompt's :class:`~ovseg.proposals.sam3.Detection` on ``image`` (the last few
        calls are cached)."""
        queries = check_queries(queries)
        threshold = check_unit("threshold", threshold)
        key, vision, _ = self.sam.encode(image)
        cache_key = (key, tuple(queries), threshold)
        with self.lock:
            if cache_key in self._results:
                self._results.move_to_end(cache_key)
                return self._results[cache_key]
            features, masks = self.text_features(queries)
            out: list[Detection] = []
            for start in range(0, len(queries), self.batch_size):
                stop = min(start + self.batch_size, len(queries))
                out += self._forward(vision, features[start:stop], masks[start:stop], threshold)
            self._results[cache_key] = out
            while len(self._results) > 2:
                self._results.popitem(last=False)
            return out

    def _forward(self, vision, features, masks, threshold: float) -> list[Detection]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        b = features.shape[0]

        def expand(maps):
            return tuple(m.expand(b, *m.shape[1:]) for m in maps)

        shared = Sam3VisionEncoderOutput(
            last_hidden_state=vision.last_hidden_state,
            fpn_hidden_states=expand(vision.fpn_hidden_states),
            fpn_position_encoding=expand(vision.fpn_position_encoding),
        )
        with torch.inference_mode():
            out = self.sam.detector(
                vision_embeds=shared,
                text_embeds=BaseModelOutputWithPooling(pooler_output=features),
                attention_mask=masks,
            )
            self.detector_calls += 1
            found = []
            for j in range(b):
                presence = out.presence_logits[j]
                scores = out.pred_logits[j].sigmoid() * presence.sigmoid()
                keep = scores > threshold
                instance = (scores[:, None, None] * out.pred_masks[j].sigmoid()).amax(0)
                semantic = presence.sigmoid() * out.semantic_seg[j, 0].sigmoid()
                found.append(
                    Detection(
                        out.pred_logits[j][keep],
                        out.pred_boxes[j][keep],
                        out.pred_masks[j][keep],
                        presence,
                        instance.float(),
                        semantic.float(),
                    )
                )
        return found

    def instances(
        self,
        image: np.ndarray,
        queries,
        owners=None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        dedup_iou: float = 0.5,
    ) -> Sam3Instances:
        """Every instance of every prompt, as the official pipeline finds it per prompt.

        Args:
            image: RGB uint8 (H, W, 3).
            queries: the prompt strings (each class's synonyms, then background names).
            owners: the entry (class) of each query, ints (Q,); default: one entry per query.
            num_classes: entries ``< num_classes`` are classes, the others background names
                (their instances label nothing and are not returned); default: all classes.
            threshold: instance score threshold (kept when ``score > threshold``).
            mask_threshold: mask probability threshold (pixel kept when ``> mask_threshold``).
            dedup_iou: an instance is dropped when a higher-scoring instance of another
                synonym of its class, or of a background name, overlaps it with mask IoU >=
                this (1.0 keeps every instance). One prompt's own instances are never dropped.

        Returns:
            :class:`Sam3Instances`, ordered by query, then as the official post-processing
            returns them.
        """
        queries = check_queries(queries)
        owners, num_entries = check_owners(owners, len(queries))
        num_classes = num_entries if num_classes is None else int(num_classes)
        mask_threshold = check_unit("mask_threshold", mask_threshold)
        dedup_iou = check_unit("dedup_iou", dedup_iou)
        detections = self.detect(image, queries, threshold)
        h, w = image.shape[:2]
        post = self.sam.processor.image_processor.post_process_instance_segmentation
        parts = []
        for q, d in enumerate(detections):
            out = _Outputs(d.logits[None], d.boxes[None], d.masks[None], d.presence[None])
            with torch.inference_mode():
                r = post(out, threshold, mask_threshold, target_sizes=[(h, w)])[0]
            n = len(r["scores"])
            parts.append(
                (
                    np.full(n, owners[q], np.int64),
                    r["scores"].float().cpu().numpy(),
                    r["boxes"].float().cpu().numpy().reshape(n, 4),
                    r["masks"].bool().cpu().numpy().reshape(n, h, w),
                    np.full(n, q, np.int64),
                )
            )
        found = Sam3Instances(*(np.concatenate(a) for a in zip(*parts, strict=True)))
        keep = dedup(found, num_classes, dedup_iou)
        return found[keep & (found.class_index < num_classes)]

    def probabilities(
        self,
        image: np.ndarray,
        queries,
        owners=None,
        threshold: float = 0.5,
        semantic: bool = True,
    ) -> torch.Tensor:
        """Per-pixel probabilities float32 (E, H, W) of the entries (see :func:`dense_map`)."""
        queries = check_queries(queries)
        owners, num_entries = check_owners(owners, len(queries))
        detections = self.detect(image, queries, threshold)
        return dense_map(detections, owners, num_entries, image.shape[:2], semantic)


@dataclass
class _Outputs:
    """The four fields ``post_process_instance_segmentation`` reads."""

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor
    presence_logits: torch.Tensor
