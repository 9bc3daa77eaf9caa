"""The app's video section: a clip in, the overlay video and the JSON out; mistakes become
messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ovseg.app.video import segment_clip
from tests.test_video_io import write_lossless
from tests.test_video_stream import synthetic_clip

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def seg():
    from ovseg.pipeline import Segmenter
    from ovseg.proposals.grid import GridOptions

    grid = GridOptions(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    return Segmenter("tiny-random", "tiny-random", device="cpu", grid=grid)


def test_clip_gives_overlay_and_json(seg, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    path = write_lossless(tmp_path / "clip.mkv", synthetic_clip(5, late=2))
    seen = []
    out = segment_clip(seg, str(path), "sky, road, car, tree", "sky, water", keyframe_every=2,
                       progress=lambda f, desc: seen.append(f))  # fmt: skip
    assert out.overlay and out.json and "5 frames" in out.status, out.status
    with av.open(out.overlay) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5
    data = json.loads(open(out.json).read())
    assert data["ovseg"]["complete"] and len(data["frames"]) == 5
    assert data["ovseg"]["settings"]["stuff"] == "sky, water"
    assert seen[-1] == pytest.approx(1.0)
    assert Path(out.overlay).parent == out.folder and out.folder.parent == tmp_path / "temp"
    assert out.folder.name.startswith(f"ovseg-video-{os.getpid()}-")


def test_mistakes_become_messages(seg, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    assert segment_clip(seg, None, "car").status == "Upload a video first."
    (tmp_path / "bad.mp4").write_bytes(b"nothing")
    out = segment_clip(seg, str(tmp_path / "bad.mp4"), "car")
    assert out.overlay is None and "bad.mp4" in out.status and out.folder is None
    assert "empty" in segment_clip(seg, str(tmp_path / "bad.mp4"), "").status
    # a write that fails half-way (a full disk): its folder goes with the message
    from ovseg.video.outputs import ClipWriter

    def full_disk(self, *args, **kwargs):
        (self.out / ".overlay.mp4.abcd.tmp").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ClipWriter, "run", full_disk)
    path = write_lossless(tmp_path / "clip.mkv", synthetic_clip(3, late=1))
    out = segment_clip(seg, str(path), "car, road", keyframe_every=2)
    assert out.overlay is None and "No space left" in out.status
    assert not list((tmp_path / "temp").iterdir())  # no folder left behind


def test_the_page_has_the_video_section(seg):
    pytest.importorskip("gradio")
    from ovseg.app.ui import build_app

    app = build_app(seg)
    ids = {c.get("props", {}).get("elem_id") for c in app.config["components"]}
    assert {"ovseg-video-in", "ovseg-video-run", "ovseg-video-out"} <= ids
