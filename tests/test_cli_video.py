"""``ovseg video``: outputs, file/folder equality, resuming an interrupted run, bad inputs,
and a short clip of consecutive CamVid frames."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main
from ovseg.result import read_label_png
from tests.test_video_io import write_lossless
from tests.test_video_stream import synthetic_clip

av = pytest.importorskip("av")
TINY = ["--sam", "tiny-random", "--clip", "tiny-random", "--no-progress"]
OPTS = ["--classes", "sky", "road", "car", "tree", "--keyframe-every", "3",
        "--points-per-side", "4", *TINY]  # fmt: skip


@pytest.fixture(scope="module")
def clip_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    clip = synthetic_clip(8, late=4)
    write_lossless(root / "clip.mkv", clip)
    (root / "frames").mkdir()
    for i, a in enumerate(clip):
        Image.fromarray(a).save(root / "frames" / f"frame_{i:04d}.png")
    return root


def outputs(out):
    data = json.loads((out / "video.json").read_text())
    labels = {p.name: read_label_png(p) for p in sorted((out / "labels").glob("*.png"))}
    with av.open(str(out / "overlay.mp4")) as c:
        overlay = sum(1 for _ in c.decode(video=0))
    return data, labels, overlay


def same(a, b):
    (da, la, oa), (db, lb, ob) = a, b
    assert da["frames"] == db["frames"] and da["objects"] == db["objects"]
    assert la.keys() == lb.keys() and all(np.array_equal(la[k], lb[k]) for k in la)
    assert oa == ob


@pytest.fixture(scope="module")
def reference_run(clip_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["video", str(clip_inputs / "clip.mkv"), "-o", str(out), *OPTS]) == 0
    return outputs(out)


def test_outputs(reference_run):
    data, labels, overlay = reference_run
    assert len(labels) == overlay == 8 and data["ovseg"]["complete"]
    assert all(v.shape == (64, 96) for v in labels.values())
    assert data["ovseg"]["classes"] == ["sky", "road", "car", "tree"]
    ids = [{o["id"] for o in f["objects"]} for f in data["frames"]]
    assert ids[0] and all(ids[0] & s for s in ids[1:])  # an id of frame 0 persists
    for obj in data["objects"]:
        frames = [
            f["frame"] for f in data["frames"] if obj["id"] in {o["id"] for o in f["objects"]}
        ]
        assert frames[0] == obj["first_frame"] and frames[-1] <= obj["last_frame"]
    first = data["frames"][0]["objects"][0]
    assert first["segmentation"]["size"] == [64, 96] and len(first["box"]) == 4


def test_folder_equals_lossless_file(clip_inputs, reference_run, tmp_path):
    assert main(["video", str(clip_inputs / "frames"), "-o", str(tmp_path / "o"), *OPTS]) == 0
    same(outputs(tmp_path / "o"), reference_run)


def test_interrupted_run_resumes_to_the_same_outputs(clip_inputs, reference_run, tmp_path,
                                                     monkeypatch, capsys):  # fmt: skip
    from ovseg.video.stream import VideoStream

    step, calls = VideoStream.step, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    out = tmp_path / "o"
    args = ["video", str(clip_inputs / "clip.mkv"), "-o", str(out), *OPTS]
    monkeypatch.setattr(VideoStream, "step", interrupted)
    assert main(args) == 130
    assert "Run the same command again" in capsys.readouterr().err
    data, labels, overlay = outputs(out)  # valid JSON, playable video, frames so far
    assert not data["ovseg"]["complete"] and len(data["frames"]) == len(labels) == overlay == 4
    monkeypatch.setattr(VideoStream, "step", step)
    calls["n"] = 0
    assert main(args) == 0
    assert "resuming after 4 frame(s)" in capsys.readouterr().err
    same(outputs(out), reference_run)
    assert not (out / ".video_state.npz").exists()
    assert main(args) == 0 and "complete already" in capsys.readouterr().err
    # killed before any checkpoint of its state (no .video_state.npz): the rerun starts over
    data = json.loads((out / "video.json").read_text())
    data["ovseg"]["complete"] = False
    (out / "video.json").write_text(json.dumps(data))
    assert main(args) == 0 and "resuming" not in capsys.readouterr().err
    same(outputs(out), reference_run)
    other = ["video", str(clip_inputs / "clip.mkv"), "-o", str(out), *OPTS, "--stride", "2"]
    assert main(other) == 2 and "other settings" in capsys.readouterr().err


def test_bad_inputs_are_named(clip_inputs, tmp_path, capsys):
    data = (clip_inputs / "clip.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty").mkdir()
    for source, message in [
        (tmp_path / "cut.mkv", "cut.mkv is truncated"),
        (tmp_path / "empty", "no images in folder"),
        (tmp_path / "missing.mp4", "missing.mp4"),
    ]:
        assert main(["video", str(source), "-o", str(tmp_path / "o"), *OPTS]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    assert main(["video", str(clip_inputs / "frames"), "-o", str(tmp_path / "foreign"), *OPTS]) == 2
    assert "holds files no video.json explains" in capsys.readouterr().err
    assert main(["video", str(clip_inputs / "frames"), "-o", str(tmp_path / "o"), *OPTS,
                 "--stuff", "water"]) == 2  # fmt: skip
    assert "--stuff names ['water']" in capsys.readouterr().err
    many = ["--classes", ",".join(f"c{i}" for i in range(300))]
    assert main(["video", str(clip_inputs / "frames"), "-o", str(tmp_path / "o"), *OPTS,
                 *many]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "at most 255 classes" in err and "got 304" in err and err.count("\n") == 1


def test_camvid_clip_h264(camvid_dir, tmp_path):
    """Four consecutive frames of one CamVid drive (downscaled), as an H.264 mp4."""
    from ovseg.video.io import VideoWriter

    names = sorted((camvid_dir / "images").glob("*.png"))[:4]
    with VideoWriter(tmp_path / "drive.mp4", fps=15) as w:
        for n in names:
            w.write(np.asarray(Image.open(n).convert("RGB").resize((160, 120))))
    out = tmp_path / "o"
    assert main(["video", str(tmp_path / "drive.mp4"), "-o", str(out), "--classes", "road",
                 "car", "sky", "building", "--stuff", "road", "sky", "--keyframe-every", "2",
                 "--points-per-side", "4", *TINY]) == 0  # fmt: skip
    data, labels, overlay = outputs(out)
    assert len(labels) == overlay == 4 and all(v.shape == (120, 160) for v in labels.values())
    stuff = {0, 2}
    assert all(o["class_index"] not in stuff for f in data["frames"] for o in f["objects"])
    shutil.rmtree(out)


def test_readme_video_block(clip_inputs):
    """The README's Python video example, with the tiny models."""
    import ovseg
    from ovseg.proposals.grid import GridOptions
    from ovseg.video import VideoStream, segment_video

    grid = GridOptions(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    seg = ovseg.Segmenter(sam="tiny-random", clip="tiny-random", grid=grid)  # a small grid
    clip = str(clip_inputs / "clip.mkv")
    results = segment_video(seg, clip, ["road", "car", "person"], stuff=["road"],
                            keyframe_every=10, stride=1, max_frames=None)  # fmt: skip
    tracked = [[(s.track_id, r.classes[s.class_index], s.box) for s in r.segments if s.track_id]
               for r in results]  # fmt: skip
    assert len(tracked) == 8
    stream = VideoStream(seg, ["person", "car"])
    frame = np.asarray(Image.open(sorted((clip_inputs / "frames").iterdir())[0]))
    assert stream.step(frame).shape == (64, 96)


def test_sam2_video_and_its_rerun(clip_inputs, tmp_path, monkeypatch, capsys):
    """With SAM 2 the objects propagate with its video memory; its memory is not saved, so an
    interrupted run starts over when rerun, to the same outputs."""
    from ovseg.video.stream import VideoStream

    opts = [*OPTS, "--sam", "sam2-tiny-random", "--max-frames", "5"]
    src = str(clip_inputs / "clip.mkv")
    assert main(["video", src, "-o", str(tmp_path / "a"), *opts]) == 0
    expected = outputs(tmp_path / "a")
    assert len(expected[1]) == expected[2] == 5
    step, calls = VideoStream.step, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(VideoStream, "step", interrupted)
    assert main(["video", src, "-o", str(tmp_path / "b"), *opts]) == 130
    assert not (tmp_path / "b" / ".video_state.npz").exists()
    monkeypatch.setattr(VideoStream, "step", step)
    capsys.readouterr()
    assert main(["video", src, "-o", str(tmp_path / "b"), *opts]) == 0
    assert "resuming" not in capsys.readouterr().err
    same(outputs(tmp_path / "b"), expected)
