"""demos/monitor.py: zone baselines and alerts (on hand-made results), and the command end to
end with the tiny models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ovseg.result import Segment, SegmentationResult

PATH = Path(__file__).resolve().parents[1] / "demos" / "monitor.py"
spec = importlib.util.spec_from_file_location("monitor_demo", PATH)
monitor = importlib.util.module_from_spec(spec)
sys.modules["monitor_demo"] = monitor  # its dataclasses look their module up
spec.loader.exec_module(monitor)

CLASSES = ["track", "gravel", "person"]
ZONE = [[0, 10], [19, 10], [19, 19], [0, 19]]  # rows 10..19 of a 20x20 frame


def result(person_rows=None):
    labels = np.zeros((20, 20), np.int32)
    labels[:, 15:] = 1
    segments = []
    if person_rows is not None:
        mask = np.zeros((20, 20), bool)
        mask[person_rows, 2:6] = True
        labels[mask] = 2
        segments.append(Segment(1, mask, 2, 0.9, (2, 0, 6, 20), int(mask.sum()), 1.0, track_id=7))
    return SegmentationResult(labels, np.ones((20, 20), np.float32), CLASSES, segments)


def test_a_class_new_to_a_zone_alerts_once_per_entry():
    zones = monitor.zone_masks({"tracks": ZONE}, (20, 20))
    m = monitor.ZoneMonitor(zones, CLASSES, baseline_frames=2, fps=5.0)
    frames = [result(), result(slice(0, 5)),  # baseline: a person above the zone is fine there
              result(slice(0, 5)), result(slice(8, 14)), result(slice(9, 15)),  # enters
              result(slice(0, 5)), result(slice(12, 18))]  # leaves, enters again  # fmt: skip
    alerts = [a for i, r in enumerate(frames) for a in m.update(i, r)]
    assert m.baseline["tracks"] == {0, 1}
    assert [(a.frame, a.zone, a.class_name, a.track_ids) for a in alerts] == [
        (3, "tracks", "person", [7]), (6, "tracks", "person", [7])]  # fmt: skip
    assert alerts[0].seconds == pytest.approx(0.6)
    assert alerts[0].fraction == pytest.approx(4 * 4 / 200)  # rows 10..13, 4 columns
    image = monitor.draw_alert(frames[3], {"tracks": ZONE}, alerts[:1])
    assert image.size == (20, 20)


def test_bad_zones():
    with pytest.raises(ValueError, match="at least 3"):
        monitor.zone_masks({"z": [[0, 0], [1, 1]]}, (20, 20))
    with pytest.raises(ValueError, match="covers no pixel"):
        monitor.zone_masks({"z": [[50, 50], [60, 50], [60, 60]]}, (20, 20))


def test_command_runs_on_frames(tmp_path, capsys):
    from PIL import Image

    from tests.test_video_stream import synthetic_clip

    (tmp_path / "frames").mkdir()
    for i, a in enumerate(synthetic_clip(4)):
        Image.fromarray(a).save(tmp_path / "frames" / f"{i:02d}.png")
    code = monitor.main([str(tmp_path / "frames"), "--classes", "road", "car", "--zones",
                         json.dumps({"road": [[0, 40], [95, 40], [95, 63], [0, 63]]}),
                         "--baseline-seconds", "0.2", "--sam", "tiny-random", "--clip",
                         "tiny-random", "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    assert "baseline: {'road':" in capsys.readouterr().out
    log = json.loads((tmp_path / "out" / "alerts.json").read_text())
    assert Image.open(tmp_path / "out" / "zones.png").size == (96, 64)
    assert all((tmp_path / "out" / a["image"]).is_file() for a in log)
