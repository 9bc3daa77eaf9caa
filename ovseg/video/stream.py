"""Video segmentation with stable object ids: keyframes, propagation, running-mean classes.

Per frame (:meth:`VideoStream.step`):

1. the dense method's map of the frame (every frame: stuff such as road and sky comes from it);
2. every tracked object is propagated to the frame (:mod:`ovseg.video.propagate`); an object
   whose mask falls under ``min_area`` pixels is lost, and of two objects whose masks overlap
   by more than ``match_iou`` the younger one is dropped;
3. on keyframes (every ``keyframe_every``-th frame, the first included) SAM's automatic grid
   proposes masks; each proposal whose best class is not a ``stuff`` class is matched to the
   objects by mask IoU (greedy, highest first, at least ``match_iou``): a matched object is
   re-anchored on the proposal, an unmatched one becomes a new object with a new id;
4. each object's class probabilities on this frame (as the method scores a mask: the mean of
   its probabilities inside, or the region scorer's for ``sam-clip``) join its running mean;
   its class is the mean's argmax, so a label does not flicker with one noisy frame;
5. the objects are painted over the method's map (strongest first, as in
   :func:`ovseg.fusion.compose`) and each instance segment of the result carries its object's
   ``track_id``.

Memory is bounded whatever the length: the stream keeps the objects' state, not the frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ovseg.image import load_image
from ovseg.result import SegmentationResult
from ovseg.structures import Masks
from ovseg.video.propagate import Propagator, default_propagator

__all__ = ["Track", "VideoStream", "segment_video"]

STREAM_OPTIONS = ("keyframe_every", "match_iou", "min_area", "max_objects", "stuff")


@dataclass
class Track:
    """One object followed through the video.

    Attributes:
        id: its id (1, 2, ... in order of appearance; never reused).
        prob_sum: float64 (K,), the sum of its per-frame class probabilities.
        frames: how many frames it was observed on.
        first_frame, last_frame: frame indices of its first and last observation.
    """

    id: int
    prob_sum: np.ndarray
    frames: int
    first_frame: int
    last_frame: int

    @property
    def probabilities(self) -> np.ndarray:
        """The running mean of its class probabilities, float32 (K,)."""
        return (self.prob_sum / max(self.frames, 1)).astype(np.float32)

    @property
    def class_index(self) -> int:
        return int(np.argmax(self.prob_sum))

    @property
    def score(self) -> float:
        return float(self.probabilities.max())


class VideoStream:
    """Step-by-step video segmentation: ``stream.step(frame) -> SegmentationResult``.

    Args:
        segmenter: the :class:`~ovseg.pipeline.Segmenter` (it needs a SAM model).
        classes, background, templates: as for ``Segmenter.segment``.
        keyframe_every: SAM's automatic grid runs on every K-th frame (1: every frame).
        match_iou: mask IoU at which a keyframe proposal is the same object as a track.
        min_area: objects (and proposals) smaller than this many pixels are dropped.
        max_objects: at most this many objects are tracked at once.
        stuff: class names that are never tracked (they come from each frame's dense map).
        propagator: a :class:`~ovseg.video.propagate.Propagator`; default
            (:func:`~ovseg.video.propagate.default_propagator`): SAM 2's video memory with a
            SAM 2 model, else SAM 1 prompted from each object's previous box and mask.
        **options: the method's options (``score_threshold``: an object labels pixels when its
            class probability reaches it, ...) and grid options (``points_per_side``, ...).

    Raises:
        ValueError / TypeError: bad classes, options or values, at construction.
    """

    def __init__(
        self,
        segmenter,
        classes: Sequence[str],
        *,
        background: Sequence[str] = (),
        templates=None,
        keyframe_every: int = 10,
        match_iou: float = 0.5,
        min_area: int = 16,
        max_objects: int = 100,
        stuff: Sequence[str] = (),
        propagator: Propagator | None = None,
        **options,
    ):
        if not callable(getattr(segmenter, "label", None)):
            raise TypeError(f"segmenter must be a Segmenter, got {type(segmenter).__name__}")
        if not segmenter.has_sam:
            raise ValueError("video needs a SAM model to propose and propagate objects")
        self.segmenter = segmenter
        self.vocab = segmenter.vocabulary(classes, background, templates)
        self.classes = list(self.vocab.classes)
        checks = (("keyframe_every", keyframe_every, 1), ("min_area", min_area, 0),
                  ("max_objects", max_objects, 1))  # fmt: skip
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not 0.0 < match_iou <= 1.0:
            raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
        stuff = [stuff] if isinstance(stuff, str) else list(stuff)
        unknown = [s for s in stuff if s not in self.classes]
        if unknown:
            raise ValueError(f"stuff names {unknown} are not among the classes {self.classes}")
        self.stuff = np.isin(np.arange(len(self.classes)),
                             [self.classes.index(s) for s in stuff])  # fmt: skip
        self.keyframe_every, self.match_iou = keyframe_every, match_iou
        self.min_area, self.max_objects = min_area, max_objects
        self.config, _ = segmenter.options(options)  # validates every option now
        self.grid_options = {k: v for k, v in options.items() if k not in self.config.options()}
        self.score_threshold = self.config.score_threshold
        self.propagator = propagator or default_propagator(segmenter)
        self.tracks: dict[int, Track] = {}
        self.ended: dict[int, Track] = {}
        self.frame_count = 0
        self.next_id = 1
        self._shape: tuple[int, int] | None = None

    def step(self, frame, index: int | None = None) -> SegmentationResult:
        """Segment the next frame (anything :func:`ovseg.image.load_image` takes); ``index``
        numbers it in the tracks' first and last frames (default: frames stepped so far)."""
        array = load_image(frame)
        if self._shape is None:
            self._shape = array.shape[:2]
        elif array.shape[:2] != self._shape:
            raise ValueError(
                f"frame {self.frame_count} is {array.shape[1]}x{array.shape[0]}; the stream's "
                f"frames are {self._shape[1]}x{self._shape[0]}"
            )
        index = self.frame_count if index is None else int(index)
        seg = self.segmenter
        with seg.lock:
            ids, masks, _ = self.propagator.step(array)
            ids, masks = self._prune(ids, masks)
            if self.frame_count % self.keyframe_every == 0:
                ids, masks = self._detect(array, ids, masks)
            observed = self._scores(array, masks)
        for t, p in zip(ids.tolist(), observed, strict=True):
            track = self.tracks.get(t)
            if track is None:
                track = self.tracks[t] = Track(t, np.zeros(len(self.classes)), 0, index, index)
            track.prob_sum += p
            track.frames += 1
            track.last_frame = index
        self.frame_count += 1
        shown = [
            i for i, t in enumerate(ids.tolist()) if not self.stuff[self.tracks[t].class_index]
        ]
        means = np.stack([self.tracks[t].probabilities for t in ids[shown].tolist()]) if shown \
            else np.zeros((0, len(self.classes)), np.float32)  # fmt: skip
        with seg.lock:
            return seg.label(
                array, self.vocab, self.config, objects=Masks.from_masks(masks[shown]),
                object_scores=means, track_ids=ids[shown],
            )  # fmt: skip

    def _scores(self, array: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) of masks on this frame, as the method scores a mask."""
        return self.segmenter._mask_scores(
            array, self.vocab, self.config, Masks.from_masks(masks)
        )  # fmt: skip

    @property
    def all_tracks(self) -> list[Track]:
        """Every object seen so far (tracked now or lost), by id."""
        return sorted([*self.tracks.values(), *self.ended.values()], key=lambda t: t.id)

    def _end(self, track_id: int) -> None:
        self.propagator.remove(track_id)
        track = self.tracks.pop(track_id, None)
        if track is not None:
            self.ended[track_id] = track

    def _prune(self, ids: np.ndarray, masks: np.ndarray):
        """Drop lost objects (too small) and the younger of two that became one."""
        if len(ids) == 0:
            return ids, masks
        areas = masks.reshape(len(ids), -1).sum(1)
        ious = _iou_matrix(masks, masks)
        keep: list[int] = []
        for i in np.argsort(ids, kind="stable"):
            if areas[i] < max(self.min_area, 1) or (keep and ious[i, keep].max() > self.match_iou):
                self._end(int(ids[i]))
            else:
                keep.append(int(i))
        kept = np.sort(np.asarray(keep, np.int64))
        return ids[kept], masks[kept]

    def _detect(self, array: np.ndarray, ids: np.ndarray, masks: np.ndarray):
        """Keyframe: SAM's grid; proposals matched to objects by IoU re-anchor them, the
        others (not stuff, large enough) become new objects."""
        seg = self.segmenter
        proposals = seg.propose(array, **self.grid_options)
        scores = self._scores(array, proposals.masks)
        best = scores.argmax(1) if len(proposals) else np.zeros(0, int)
        areas = proposals.masks.sum((1, 2))
        good = (
            ~self.stuff[best]
            & (scores.max(1, initial=0.0) > 0)
            & (scores.max(1, initial=0.0) >= self.score_threshold)
            & (areas >= max(self.min_area, 1))
        )
        cand = np.flatnonzero(good)
        ious = _iou_matrix(proposals.masks[cand], masks)
        masks = masks.copy()
        taken_tracks: set[int] = set()
        taken_props: set[int] = set()
        anchors: dict[int, np.ndarray] = {}
        for flat in np.argsort(-ious, axis=None, kind="stable"):
            p, t = np.unravel_index(flat, ious.shape)
            if ious[p, t] < self.match_iou:
                break
            if p in taken_props or t in taken_tracks:
                continue
            taken_props.add(p)
            taken_tracks.add(t)
            masks[t] = proposals.masks[cand[p]]
            anchors[int(ids[t])] = masks[t]
        new_ids, new_masks = list(ids.tolist()), list(masks)
        for p in range(len(cand)):  # proposals come sorted by predicted IoU
            if p in taken_props or len(new_ids) >= self.max_objects:
                continue
            mask = proposals.masks[cand[p]]
            if new_masks and _iou_matrix(mask[None], np.stack(new_masks)).max() >= self.match_iou:
                continue
            track_id = self.next_id
            self.next_id += 1
            anchors[track_id] = mask
            new_ids.append(track_id)
            new_masks.append(mask)
        self.propagator.add_many(anchors)
        h, w = array.shape[:2]
        stacked = np.stack(new_masks) if new_masks else np.zeros((0, h, w), bool)
        return np.asarray(new_ids, np.int64), stacked

    # -- resuming ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray] | None:
        """The stream's state after the last step (arrays), for :meth:`load_state_dict`; None
        when the propagator cannot save its own (SAM 2's memory)."""
        if not self.propagator.resumable:
            return None
        tracks = [*self.tracks.values(), *self.ended.values()]
        state = {
            "track_alive": np.asarray([t.id in self.tracks for t in tracks], bool),
            "frame_count": np.int64(self.frame_count),
            "next_id": np.int64(self.next_id),
            "shape": np.asarray(self._shape or (0, 0), np.int64),
            "track_ids": np.asarray([t.id for t in tracks], np.int64),
            "track_prob_sum": np.asarray([t.prob_sum for t in tracks], np.float64).reshape(
                len(tracks), len(self.classes)
            ),
            "track_counts": np.asarray(
                [(t.frames, t.first_frame, t.last_frame) for t in tracks], np.int64
            ).reshape(len(tracks), 3),
        }
        state.update({f"propagator/{k}": v for k, v in self.propagator.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state saved by :meth:`state_dict` (same classes and options)."""
        sums = np.asarray(state["track_prob_sum"], np.float64)
        if sums.ndim != 2 or sums.shape[1] != len(self.classes):
            raise ValueError("the saved video state was made with other classes")
        self.frame_count = int(state["frame_count"])
        self.next_id = int(state["next_id"])
        shape = tuple(int(v) for v in state["shape"])
        self._shape = shape if shape != (0, 0) else None
        self.tracks, self.ended = {}, {}
        for t, s, c, alive in zip(
            state["track_ids"], sums, state["track_counts"], state["track_alive"], strict=True
        ):
            track = Track(int(t), s.copy(), int(c[0]), int(c[1]), int(c[2]))
            (self.tracks if alive else self.ended)[track.id] = track
        self.propagator.load_state_dict(
            {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith("propagator/")}
        )


def segment_video(
    segmenter, frames, classes: Sequence[str], *, start: int = 0,
    end: int | None = None, stride: int = 1, max_frames: int | None = None, **options,
) -> Iterator[SegmentationResult]:  # fmt: skip
    """Segment a video, yielding one :class:`~ovseg.result.SegmentationResult` per frame whose
    instance segments carry a ``track_id``.

    Args:
        frames: a video file, a folder of frames, a camera index, or an iterable (a generator
            for streams) of images; see :func:`ovseg.video.io.open_frames`.
        classes: the class names.
        start, end, stride, max_frames: which frames (source indices ``start``,
            ``start + stride``, ... below ``end``; at most ``max_frames``).
        **options: :class:`VideoStream` options (``keyframe_every``, ``stuff``, ...), and the
            per-call options of ``Segmenter.segment`` (``background``, grid, method options).

    Every check of the input and options runs when this is called, before the first frame.
    """
    from ovseg.video.io import open_frames

    source = open_frames(frames, start=start, end=end, stride=stride, max_frames=max_frames)
    stream = VideoStream(segmenter, classes, **options)

    def results() -> Iterator[SegmentationResult]:
        for index, frame in source:
            yield stream.step(frame, index)

    return results()


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask IoU float (N, M) of bool (N, H, W) and (M, H, W)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
