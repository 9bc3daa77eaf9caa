"""Every instance of text prompts through a stream of frames: SAM 3's detector and tracker
(``transformers.Sam3VideoModel``), frame after frame.

:class:`Sam3VideoStream` computes what the official streaming loop computes::

    session = processor.init_video_session(inference_device=device, dtype=dtype)
    processor.add_text_prompt(session, prompts)
    for frame in frames:
        inputs = processor(images=frame, return_tensors="pt")
        out = model(inference_session=session, frame=inputs.pixel_values[0])
        processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes)

so object ids are SAM 3's: an object detected for the first time gets the next id (ids are
never reused), and keeps it while it is tracked. Each object belongs to the prompt that found
it, hence to that prompt's class.

Memory. The official loop keeps every frame (3 x 1008 x 1008 floats each), every object's
outputs on every frame (with full-resolution masks) and per-frame bookkeeping, so it grows with
the stream. After each step this stream drops what no later step reads: earlier frames; for each
object, the full-resolution masks, the outputs of tracked frames beyond the memory windows
(``num_maskmem - 1`` frames of memory features, ``max_object_pointers_in_encoder - 1`` frames
of object pointers), the memory features of conditioning frames neither among the
``max_cond_frame_num`` most recent nor inside the memory window (their object pointers, a
vector each, stay), earlier mask inputs; per-frame tracker scores and suppressed ids of earlier
frames. The outputs are the same as the official loop's (tested); memory is flat in the number
of frames and grows with the objects (and, by one pointer vector, with their reconditionings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ovseg.proposals.sam3 import Sam3Bundle, check_image, check_owners, check_queries

__all__ = ["Sam3VideoStream", "VideoInstances", "session_bytes"]


@dataclass
class VideoInstances:
    """The instances on one frame of a stream.

    Attributes:
        frame: the frame's index in the stream.
        obj_ids: int64 (N,), SAM 3's object ids (stable while an object is tracked).
        class_index: int64 (N,), the class (entry) of the prompt that found each object.
        query_index: int64 (N,), that prompt.
        scores: float32 (N,) in [0, 1], each object's detection score.
        boxes: float32 (N, 4), XYXY pixels of the mask.
        masks: bool (N, H, W) at the frame size.
    """

    frame: int
    obj_ids: np.ndarray
    class_index: np.ndarray
    query_index: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.obj_ids)


def video_processor(sam: Sam3Bundle):
    """A ``Sam3VideoProcessor`` sharing the bundle's image processor and tokenizer (streaming
    needs no video processor of its own; SAM 2's stands in for the constructor)."""
    from transformers import Sam2VideoVideoProcessor, Sam3VideoProcessor

    return Sam3VideoProcessor(
        image_processor=sam.processor.image_processor,
        video_processor=Sam2VideoVideoProcessor(),
        tokenizer=sam.processor.tokenizer,
    )


class Sam3VideoStream:
    """Every instance of ``queries`` tracked through frames given one at a time.

    Args:
        sam: a :class:`~ovseg.proposals.sam3.Sam3Bundle` holding a ``Sam3VideoModel``.
        queries: the prompt strings (each class's synonyms, then background names).
        owners: the entry (class) of each query, ints (Q,); default: one entry per query.
        num_classes: entries ``< num_classes`` are classes; objects of the others (background
            names) are tracked, so that they keep their pixels, but not returned.
        offload_state_to_cpu: keep the tracking state on the CPU when the model is on a GPU.
    """

    def __init__(
        self,
        sam: Sam3Bundle,
        queries,
        owners=None,
        num_classes: int | None = None,
        *,
        offload_state_to_cpu: bool = False,
    ):
        if not isinstance(sam, Sam3Bundle) or not sam.has_tracker:
            raise ValueError("video needs SAM 3's video model (a Sam3Bundle of a Sam3VideoModel)")
        self.queries = check_queries(queries)
        self.owners, entries = check_owners(owners, len(self.queries))
        self.num_classes = entries if num_classes is None else int(num_classes)
        self.sam, self.model = sam, sam.model
        self.processor = video_processor(sam)
        param = next(self.model.parameters())
        self.session = self.processor.init_video_session(
            inference_device=param.device,
            inference_state_device="cpu" if offload_state_to_cpu else param.device,
            dtype=param.dtype,
        )
        self.processor.add_text_prompt(self.session, self.queries)
        self._prompt_query = {
            pid: self.queries.index(text) for pid, text in self.session.prompts.items()
        }
        tracker = self.model.tracker_model.config
        self.mem_window = max(1, int(tracker.num_maskmem) - 1)
        self.window = max(self.mem_window, int(tracker.max_object_pointers_in_encoder) - 1)
        self.max_cond = int(tracker.max_cond_frame_num)
        self.frame_index = -1
        self.size: tuple[int, int] | None = None

    def step(self, frame: np.ndarray) -> VideoInstances:
        """Detect and track on the next frame (RGB uint8 (H, W, 3), the same size for every
        frame of the stream)."""
        frame = check_image(frame)
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise ValueError(
                f"frame {self.frame_index + 1} is {frame.shape[1]}x{frame.shape[0]} but the "
                f"stream's frames are {self.size[1]}x{self.size[0]}; all must share one size"
            )
        inputs = self.processor(images=frame, return_tensors="pt")
        f = self.frame_index + 1  # given: the session would count its (trimmed) frames
        with torch.inference_mode():
            out = self.model(
                inference_session=self.session, frame_idx=f, frame=inputs.pixel_values[0]
            )
            res = self.processor.postprocess_outputs(
                self.session, out, original_sizes=inputs.original_sizes
            )
        self.frame_index = int(out.frame_idx)
        self._trim(self.frame_index)
        ids = res["object_ids"].cpu().numpy().astype(np.int64)
        query = np.array(
            [self._prompt_query[self.session.obj_id_to_prompt_id[int(i)]] for i in ids], np.int64
        )
        owner = self.owners[query] if len(ids) else np.zeros(0, np.int64)
        keep = owner < self.num_classes
        return VideoInstances(
            frame=self.frame_index,
            obj_ids=ids[keep],
            class_index=owner[keep],
            query_index=query[keep],
            scores=res["scores"].float().cpu().numpy()[keep],
            boxes=res["boxes"].float().cpu().numpy().reshape(-1, 4)[keep],
            masks=res["masks"].bool().cpu().numpy().reshape(len(ids), *self.size)[keep],
        )

    def _trim(self, f: int) -> None:
        """Drop what no step after frame ``f`` reads (see the module docstring)."""
        s = self.session
        per_frame = (s.processed_frames, s.obj_id_to_tracker_score_frame_wise, s.suppressed_obj_ids)
        for table in per_frame:
            for t in [t for t in table if t < f]:
                del table[t]
        for obj_idx, out in s.output_dict_per_obj.items():
            cond = out["cond_frame_outputs"]
            recent = set(sorted(cond)[-self.max_cond :]) if self.max_cond > 0 else set(cond)
            for kind, outputs in out.items():
                tracked = kind == "non_cond_frame_outputs"
                for t in list(outputs):
                    o, age = outputs[t], f - t
                    o.pop("high_res_masks", None)
                    if age > 0:
                        o.pop("pred_masks", None)
                    if tracked and age >= self.window:
                        del outputs[t]
                    elif age >= self.mem_window and (tracked or t not in recent):
                        o.pop("maskmem_features", None)
                        o.pop("maskmem_pos_enc", None)
            for table in (
                s.frames_tracked_per_obj.get(obj_idx, {}),
                s.mask_inputs_per_obj.get(obj_idx, {}),
                s.point_inputs_per_obj.get(obj_idx, {}),
            ):
                for t in [t for t in table if t < f]:
                    del table[t]


def session_bytes(session) -> int:
    """Bytes of every tensor a video session holds (each storage counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [vars(session)]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            ptr = item.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += item.untyped_storage().nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
        elif hasattr(item, "__dict__") and type(item).__module__.startswith("transformers"):
            stack.append(vars(item))
    return total
