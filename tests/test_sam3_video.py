"""SAM 3 video: :class:`~ovseg.proposals.sam3_video.Sam3VideoStream` against the official
``transformers`` streaming loop (``Sam3VideoProcessor`` -> ``Sam3VideoModel`` ->
``postprocess_outputs``, nothing dropped) on the tiny random model and CamVid frames: the same
objects, ids, scores and masks on every frame (the same operations on the same tensors, so
exactly), while the stream's state stays flat and the official loop's grows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.models.sam3_weights import tiny_sam3
from ovseg.proposals.sam3 import Sam3Bundle
from ovseg.proposals.sam3_video import Sam3VideoStream, session_bytes, video_processor

FRAMES = 6


@pytest.fixture(scope="module")
def sam() -> Sam3Bundle:
    return tiny_sam3()


@pytest.fixture(scope="module")
def frames(camvid_dir) -> list[np.ndarray]:
    from ovseg.image import load_image

    return [load_image(p) for p in sorted((camvid_dir / "images").glob("*.png"))[:FRAMES]]


def official_loop(sam, frames, prompts):
    processor = video_processor(sam)
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    processor.add_text_prompt(session, prompts)
    for frame in frames:
        inputs = processor(images=frame, return_tensors="pt")
        with torch.inference_mode():
            out = sam.model(inference_session=session, frame=inputs.pixel_values[0])
            res = processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes)
        yield res, session


def test_stream_equals_the_official_loop(sam, frames):
    prompts = ["car", "road"]
    stream = Sam3VideoStream(sam, prompts)
    seen: set[int] = set()
    ours_bytes, official_bytes = [], []
    for frame, (ref, session) in zip(frames, official_loop(sam, frames, prompts), strict=True):
        got = stream.step(frame)
        assert np.array_equal(got.obj_ids, ref["object_ids"].numpy())
        assert np.array_equal(got.scores, ref["scores"].numpy())
        assert np.array_equal(got.masks, ref["masks"].numpy())
        assert np.array_equal(got.boxes, ref["boxes"].numpy())
        by_prompt = {i: p for p, ids in ref["prompt_to_obj_ids"].items() for i in ids}
        assert [prompts[q] for q in got.query_index] == [by_prompt[i] for i in got.obj_ids]
        assert np.array_equal(got.class_index, got.query_index)
        new = set(got.obj_ids.tolist()) - seen
        assert all(i > max(seen, default=-1) for i in new)  # new objects, new ids
        seen |= new
        ours_bytes.append(session_bytes(stream.session))
        official_bytes.append(session_bytes(session))
    assert len(seen) > 0 and stream.frame_index == FRAMES - 1
    assert len(stream.session.processed_frames) == 1
    assert official_bytes[-1] > 2 * ours_bytes[-1]  # the official loop keeps everything


def test_state_stops_growing_once_the_memory_windows_are_full(sam, frames):
    stream = Sam3VideoStream(sam, ["car"])
    held, objects = [], []
    for _ in range(7):  # one frame again and again: the same objects on every frame
        stream.step(frames[0])
        held.append(session_bytes(stream.session))
        objects.append(len(stream.session.obj_ids))
    assert len(set(objects)) == 1 and objects[0] > 0
    assert max(held[3:]) == held[3] > held[0]  # the tiny model's windows: 2 to 3 frames


def test_background_objects_are_tracked_but_not_returned(sam, frames):
    both = Sam3VideoStream(sam, ["car", "sky"])
    classes_only = Sam3VideoStream(sam, ["car", "sky"], num_classes=1)
    for frame in frames[:2]:
        a, b = both.step(frame), classes_only.step(frame)
        assert np.array_equal(b.obj_ids, a.obj_ids[a.class_index == 0])
        assert np.array_equal(b.masks, a.masks[a.class_index == 0])


def test_bad_streams(sam, frames):
    with pytest.raises(ValueError, match="video model"):
        Sam3VideoStream(Sam3Bundle(sam.detector, sam.processor), ["car"])
    stream = Sam3VideoStream(sam, ["car"])
    stream.step(frames[0])
    with pytest.raises(ValueError, match="share one size"):
        stream.step(frames[0][:100])
    with pytest.raises(ValueError, match="RGB uint8"):
        stream.step(frames[0].astype(np.float32))
