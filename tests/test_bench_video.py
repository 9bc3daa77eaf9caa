"""``ovseg bench --video``: both sides on the same frames, one report."""

from __future__ import annotations

import json

import pytest

from ovseg.bench.video import VideoBenchConfig, run_video_bench, video_markdown


def test_video_bench_tiny(tmp_path):
    config = VideoBenchConfig(sam="tiny-random", clip="tiny-random", device="cpu", frames=3,
                              keyframe_every=2, points_per_side=4, data=str(tmp_path))  # fmt: skip
    r = run_video_bench(config, progress=lambda m: None)
    assert r["source"].startswith("generated") and r["frame_size"] == [240, 320]
    assert r["speedup"] == pytest.approx(r["independent"]["seconds"] / r["propagation"]["seconds"])
    assert r["propagation"]["keyframes"] == 2 and 0.0 <= r["pixel_agreement"] <= 1.0
    text = video_markdown(r)
    assert "speed-up" in text and "keyframe every 2" in text
    json.dumps(r, default=float)


def test_video_bench_cli_refuses_one_frame(tmp_path, capsys):
    from ovseg.cli import main

    assert main(["bench", "--video", "--tiny", "--images", "1", "-o", str(tmp_path)]) == 2
    assert "--images must be >= 2" in capsys.readouterr().err
