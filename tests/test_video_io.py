"""Video input and output: files, folders, iterables, selection, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.video.io import VideoWriter, open_frames

av = pytest.importorskip("av")


def frames(n=6, h=32, w=48):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_lossless(path, clip, fps=10):
    """FFV1 in Matroska, RGB (bgr0): decodes to the exact frames."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=fps)
        s.height, s.width = clip[0].shape[:2]
        s.pix_fmt = "bgr0"
        for a in clip:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_lossless_file_and_folder_give_the_same_frames(tmp_path):
    from PIL import Image

    clip = frames()
    write_lossless(tmp_path / "c.mkv", clip)
    (tmp_path / "f").mkdir()
    for i, a in enumerate(clip):
        Image.fromarray(a).save(tmp_path / "f" / f"{i:03d}.png")
    a = open_frames(tmp_path / "c.mkv")
    b = open_frames(tmp_path / "f")
    assert (a.count, a.size, a.fps) == (6, (32, 48), 10.0) and b.count == 6
    got_a, got_b = list(a), list(b)
    assert [i for i, _ in got_a] == [i for i, _ in got_b] == list(range(6))
    for (_, x), (_, y), z in zip(got_a, got_b, clip, strict=True):
        assert np.array_equal(x, z) and np.array_equal(y, z)


def test_selection(tmp_path):
    clip = frames(10)
    write_lossless(tmp_path / "c.mkv", clip)
    src = open_frames(tmp_path / "c.mkv", start=1, end=9, stride=3, max_frames=2)
    got = list(src)
    assert src.count == 2 and [i for i, _ in got] == [1, 4]
    assert np.array_equal(got[1][1], clip[4])
    assert [i for i, _ in open_frames(iter(clip), stride=4)] == [0, 4, 8]


def test_h264_writer_round_trip(tmp_path):
    clip = frames(5, 31, 47)  # odd sides are padded
    with VideoWriter(tmp_path / "o.mp4", fps=5) as w:
        for a in clip:
            w.write(a)
    assert not list(tmp_path.glob(".o.mp4*"))  # the temporary file was renamed
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (32, 48, 3)
    src = open_frames(tmp_path / "o.mp4")
    assert src.count == 5 and len(list(src)) == 5


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_truncated_video_is_named(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    if suffix == ".mkv":
        write_lossless(path, frames(10))
    else:
        with VideoWriter(path, fps=10) as w:
            for a in frames(10):
                w.write(a)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cut{suffix}.*(truncated|corrupt)|truncated.*cut"):
        open_frames(cut)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_frames(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images in folder .*empty"):
        open_frames(tmp_path / "empty")
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="bad.mp4"):
        open_frames(tmp_path / "bad.mp4")
    (tmp_path / "zero.mkv").write_bytes(b"")
    with pytest.raises(ValueError, match="zero.mkv"):
        open_frames(tmp_path / "zero.mkv")
    with pytest.raises(FileNotFoundError, match="camera 97"):
        open_frames(97)
    with pytest.raises(TypeError, match="source must be"):
        open_frames(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="stride"):
        open_frames(iter([]), stride=0)
    mixed = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1 is 10x8"):
        list(open_frames(iter(mixed)))
