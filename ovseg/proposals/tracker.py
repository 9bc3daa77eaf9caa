"""SAM 2 video tracking, frame after frame: :class:`VideoTracker` over transformers'
``Sam2VideoModel`` and its inference session.

The tracker computes what Meta's ``SAM2VideoPredictor`` computes: the same frame
preprocessing (Pillow resize to the model's square input, ImageNet normalisation), the same
prompt coordinates, the same conditioning and tracking steps, the same bilinear upsampling of
the low-resolution logits to the frame size.

Memory. One preprocessed frame and one frame's image features are held at a time. The tracking
state keeps, per object, the outputs of its prompted frames and of the last frames the model's
memory still reads (``num_maskmem - 1`` memory frames, ``max_object_pointers_in_encoder - 1``
object pointers); older outputs, and every full-resolution mask, are dropped as tracking moves
on. Memory is flat in the number of frames; it grows with the objects and the prompted frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovseg.image import load_image
from ovseg.proposals.prompts import Prompt, make_prompt

__all__ = ["FrameMasks", "VideoTracker", "as_video_prompt"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_PROMPT_KEYS = ("points", "point_labels", "box", "mask", "scribble")


@dataclass
class FrameMasks:
    """The tracked objects' masks on one frame.

    Attributes:
        frame: the frame's index in the clip or stream.
        obj_ids: int64 (N,), the object ids, in the order they were first prompted.
        masks: bool (N, H, W) at the frame size (empty where the object is not seen).
        scores: float32 (N,), the model's probability that each object is visible.
        logits: float32 (N, h, w), the low-resolution mask logits in the model's square input
            frame (h = w = image_size / 4); ``masks`` is their bilinear upsampling > 0.
    """

    frame: int
    obj_ids: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    def __len__(self) -> int:
        return len(self.obj_ids)


class VideoTracker:
    """Objects tracked through a stream of frames by SAM 2's memory.

    Call :meth:`step` with each new frame, and :meth:`add` to prompt objects (new ones, or
    corrections of tracked ones) on the frame of the last step. A new object's prompt is its
    conditioning frame, kept for the whole stream; a correction of a tracked object acts
    through the recent-frame memory, as in Meta's predictor. (Meta also feeds a point
    correction the object's previous logits on that frame; here points start afresh, as in
    transformers. A mask correction is the same in both.)

    Args:
        model: a ``transformers.Sam2VideoModel`` (its device and dtype are used).
        offload_state_to_cpu: keep the tracking state on the CPU when the model is on a GPU.

    >>> tracker = VideoTracker(model)
    >>> tracker.step(frame0); tracker.add({1: {"points": [[40, 30]]}, 2: mask})
    >>> for frame in frames:
    ...     result = tracker.step(frame)   # FrameMasks with ids [1, 2]
    """

    def __init__(self, model, *, offload_state_to_cpu: bool = False, _frames=None, _size=None):
        from transformers import Sam2VideoInferenceSession, Sam2VideoModel

        if not isinstance(model, Sam2VideoModel):
            raise TypeError(
                f"model must be a transformers Sam2VideoModel, got {type(model).__name__}"
            )
        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.image_size = int(model.config.image_size)
        self.session = Sam2VideoInferenceSession(
            inference_device=self.device,
            inference_state_device="cpu" if offload_state_to_cpu else self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )
        self.session.processed_frames = {} if _frames is None else _frames
        self.streaming = _frames is None
        self.size: tuple[int, int] | None = _size
        self.frame_index = -1
        cfg = model.config
        self.mem_window = max(1, int(cfg.num_maskmem) - 1)
        self.window = max(self.mem_window, int(cfg.max_object_pointers_in_encoder) - 1)

    @property
    def obj_ids(self) -> list[int]:
        return list(self.session.obj_ids)

    def step(self, frame) -> FrameMasks:
        """Track every object onto the next frame (RGB uint8 (H, W, 3), or anything
        :func:`ovseg.image.load_image` reads). Before the first :meth:`add` it returns no
        objects."""
        if not self.streaming:
            raise RuntimeError("step(frame) is for streams; this tracker reads a clip")
        frame = load_image(frame)
        if self.size is None:
            self.size = frame.shape[:2]
            self.session.video_height, self.session.video_width = self.size
        elif frame.shape[:2] != self.size:
            raise ValueError(
                f"frame {self.frame_index + 1} is {frame.shape[1]}x{frame.shape[0]} but the "
                f"stream's frames are {self.size[1]}x{self.size[0]}; all must share one size"
            )
        self.session.processed_frames.pop(self.frame_index, None)
        self.frame_index += 1
        f = self.frame_index
        pixels = self.pixels(frame)
        if not self.session.obj_ids:
            self.session.add_new_frame(pixels, f)
            return self._empty(f)
        result = self._forward(f, frame=pixels)
        self._trim(f, 1)
        return result

    def add(self, prompts: Mapping[int, object]) -> FrameMasks:
        """Prompt objects on the current frame (the last :meth:`step`): ``{obj_id: prompt}``,
        a prompt being a mask (bool ``(H, W)``, the object's exact mask), a dict with
        ``points`` (``(x, y)`` pixels), ``point_labels`` (1/0), ``box`` (XYXY pixels),
        ``scribble`` or ``mask``, or a :class:`~ovseg.proposals.prompts.Prompt`. Returns
        every object's masks on the current frame.

        Raises:
            RuntimeError: no frame yet.
            ValueError, TypeError: a bad object id or prompt (see :func:`as_video_prompt`).
        """
        if self.frame_index < 0 or self.size is None:
            raise RuntimeError("no frame yet: call step(frame) before add(prompts)")
        f = self.frame_index
        checked = check_object_prompts(prompts, self.size, f)
        self._add_inputs(f, checked)
        pixels = self.session.processed_frames[f] if self.streaming else None
        return self._forward_new_only(f, frame=pixels)

    def remove(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` (no error when it is not tracked)."""
        s = self.session
        if obj_id not in s.obj_ids:
            return
        # The session has no removal: rebuild its per-object tables without this object.
        keep = [i for i in s.obj_ids if i != obj_id]
        old = [s.obj_id_to_idx(i) for i in keep]
        for name in (
            "point_inputs_per_obj",
            "mask_inputs_per_obj",
            "output_dict_per_obj",
            "frames_tracked_per_obj",
        ):
            table = getattr(s, name)
            setattr(s, name, {n: table[o] for n, o in enumerate(old)})
        s._obj_id_to_idx.clear()
        s._obj_idx_to_id.clear()
        for n, i in enumerate(keep):
            s._obj_id_to_idx[i] = n
            s._obj_idx_to_id[n] = i
        s.obj_ids = keep
        s.obj_with_new_inputs = [i for i in s.obj_with_new_inputs if i != obj_id]

    def pixels(self, frame: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> the model's normalised float (3, S, S), as Meta's loader."""
        small = np.asarray(Image.fromarray(frame).resize((self.image_size, self.image_size)))
        t = torch.from_numpy(small / 255.0).permute(2, 0, 1).float()
        t = (t - torch.tensor(_MEAN)[:, None, None]) / torch.tensor(_STD)[:, None, None]
        return t.to(self.device, self.dtype)

    def _add_inputs(self, f: int, prompts: dict[int, Prompt]) -> None:
        s = self.session
        h, w = self.size
        scale = torch.tensor([w, h], dtype=torch.float32)
        for obj_id, prompt in prompts.items():
            obj_idx = s.obj_id_to_idx(obj_id)
            if prompt.mask is not None:
                m = torch.from_numpy(prompt.mask).float()[None, None]
                if m.shape[-2:] != (self.image_size, self.image_size):
                    side = (self.image_size, self.image_size)
                    m = F.interpolate(
                        m, size=side, mode="bilinear", align_corners=False, antialias=True
                    )
                    m = (m >= 0.5).float()
                s.add_mask_inputs(obj_idx, f, m)
                s.remove_point_inputs(obj_idx, f)
                continue
            points, labels = prompt.all_points()
            coords = [] if points is None else [torch.from_numpy(points)]
            codes = [] if labels is None else [torch.from_numpy(labels)]
            if prompt.boxes is not None:  # a box is two corner points, labels 2 and 3, first
                coords.insert(0, torch.from_numpy(prompt.boxes[0]).reshape(2, 2))
                codes.insert(0, torch.tensor([2, 3], dtype=torch.int32))
            xy = torch.cat(coords).float() / scale * self.image_size
            inputs = {
                "point_coords": xy[None, None],
                "point_labels": torch.cat(codes).to(torch.int32)[None, None],
            }
            s.add_point_inputs(obj_idx, f, inputs)
            s.remove_mask_inputs(obj_idx, f)
        s.obj_with_new_inputs = list(prompts)

    def _forward_new_only(self, f: int, frame=None) -> FrameMasks:
        """Run the prompted objects on frame ``f``; the others' outputs there are reused (the
        model reuses a frame's stored conditioning outputs, so they are lent there for the
        call) instead of being tracked and their memory encoded again."""
        s = self.session
        lent = []
        for obj_idx, out in s.output_dict_per_obj.items():
            if s.obj_idx_to_id(obj_idx) not in s.obj_with_new_inputs:
                tracked = out["non_cond_frame_outputs"]
                if f in tracked and "pred_masks" in tracked[f]:
                    out["cond_frame_outputs"][f] = tracked.pop(f)
                    lent.append(obj_idx)
        try:
            result = self._forward(f, frame=frame)
        finally:
            for obj_idx in lent:
                out = s.output_dict_per_obj[obj_idx]
                out["non_cond_frame_outputs"][f] = out["cond_frame_outputs"].pop(f)
        for out in s.output_dict_per_obj.values():
            for o in out["cond_frame_outputs"].values():
                o.pop("high_res_masks", None)
        return result

    def _forward(self, f: int, reverse: bool = False, frame=None) -> FrameMasks:
        with torch.inference_mode():
            out = self.model(self.session, frame_idx=f, frame=frame, reverse=reverse)
            logits = out.pred_masks.float()
            masks = F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)
            return FrameMasks(
                frame=f,
                obj_ids=np.asarray(out.object_ids, dtype=np.int64),
                masks=(masks[:, 0] > 0).cpu().numpy(),
                scores=torch.sigmoid(out.object_score_logits.float()).reshape(-1).cpu().numpy(),
                logits=logits[:, 0].cpu().numpy(),
            )

    def _forget_tracking(self) -> None:
        """Drop the tracked outputs that conditioning a frame computes for the objects not
        prompted on it, so that propagation starts from the prompted frames alone (Meta's
        predictor never computes them)."""
        for obj_idx, out in self.session.output_dict_per_obj.items():
            out["non_cond_frame_outputs"].clear()
            self.session.frames_tracked_per_obj[obj_idx].clear()

    def _trim(self, f: int, sign: int, keep: range | None = None) -> None:
        """Drop what no later step in direction ``sign`` reads: full-resolution masks, older
        low-resolution ones, and the outputs of frames beyond the memory and object-pointer
        windows behind ``f`` (frames in ``keep`` are kept whole)."""
        s = self.session
        for obj_idx, out in s.output_dict_per_obj.items():
            for o in out["cond_frame_outputs"].values():
                o.pop("high_res_masks", None)
            tracked = out["non_cond_frame_outputs"]
            for t in list(tracked):
                o = tracked[t]
                o.pop("high_res_masks", None)
                dist = (f - t) * sign
                if t != f:
                    o.pop("pred_masks", None)
                if dist < 0 or (keep is not None and t in keep):
                    continue
                if dist >= self.window:
                    del tracked[t]
                    s.frames_tracked_per_obj[obj_idx].pop(t, None)
                elif dist >= self.mem_window:
                    o.pop("maskmem_features", None)
                    o.pop("maskmem_pos_enc", None)

    def _empty(self, f: int) -> FrameMasks:
        side = self.image_size // 4
        return FrameMasks(
            frame=f,
            obj_ids=np.zeros(0, np.int64),
            masks=np.zeros((0, *self.size), bool),
            scores=np.zeros(0, np.float32),
            logits=np.zeros((0, side, side), np.float32),
        )


def check_object_prompts(objs, size: tuple[int, int], f: int) -> dict[int, Prompt]:
    """``{obj_id: prompt}`` on frame ``f`` -> ``{int obj_id: Prompt}``, validated."""
    if not isinstance(objs, Mapping) or not objs:
        raise ValueError(f"prompts on frame {f} must be a non-empty mapping {{obj_id: prompt}}")
    out = {}
    for obj_id, value in objs.items():
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise ValueError(f"object ids must be integers, got {obj_id!r} on frame {f}")
        out[int(obj_id)] = as_video_prompt(value, size, where=f"object {obj_id} on frame {f}")
    return out


def as_video_prompt(value, size: tuple[int, int], where: str = "prompt") -> Prompt:
    """One object's prompt on a frame of ``size`` (H, W) as a validated
    :class:`~ovseg.proposals.prompts.Prompt`: a mask alone (its exact mask), or points and/or
    one box (scribbles give points).

    Raises:
        ValueError: unknown keys, an empty prompt or mask, a mask with points or a box, several
            boxes, or what :func:`~ovseg.proposals.prompts.make_prompt` refuses (shapes,
            coordinates outside the frame, labels).
        TypeError: values that are not array-like.
    """
    try:
        if isinstance(value, Prompt):
            if value.shape != size:
                raise ValueError(f"it was made for a {value.shape} image, the frames are {size}")
            prompt = value
        elif isinstance(value, Mapping):
            unknown = set(value) - set(_PROMPT_KEYS)
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {_PROMPT_KEYS})")
            prompt = make_prompt(
                size,
                points=value.get("points"),
                point_labels=value.get("point_labels"),
                boxes=value.get("box"),
                mask=value.get("mask"),
                scribble=value.get("scribble"),
            )
        else:
            prompt = make_prompt(size, mask=value)
        if prompt.is_empty:
            raise ValueError("it is empty (give points, a box, a scribble or a mask)")
        located = prompt.points is not None or prompt.boxes is not None
        if prompt.mask is not None and (located or prompt.scribble is not None):
            raise ValueError("a mask is the object's exact mask and cannot join points or a box")
        if prompt.boxes is not None and len(prompt.boxes) > 1:
            raise ValueError(f"one box per object, got {len(prompt.boxes)}")
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: {e}") from e
    return prompt
