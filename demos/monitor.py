"""Monitor zones of a scene: learn which classes occupy each zone, alert on a newcomer.

    python demos/monitor.py VIDEO --classes "rail track" person train gravel \
        --zones '{"tracks": [[40, 300], [440, 300], [300, 200], [180, 200]]}' \
        --baseline-seconds 2 -o alerts/ [--sam vit_b] [--clip ViT-B-16/openai]

Zones are polygons of ``(x, y)`` pixels drawn on the first frame (a JSON object: name ->
points). The video is segmented with stable object ids (``ovseg.video.segment_video``). Over
the first ``--baseline-seconds``, each zone learns which classes occupy it (a class occupies
a zone on a frame when it covers at least ``--min-fraction`` of the zone). After that, a class
entering a zone it never occupied during the baseline (a person on the tracks) raises one
alert per entry: the frame is saved with the zones and the objects drawn
(``OUT/alert_NNNNNN.png``) and the alert is added to ``OUT/alerts.json`` (frame, time, zone,
class, fraction of the zone, object ids), both written atomically as they happen.
``OUT/zones.png`` shows the zones drawn on the first frame.

Smoke run with the tiny random models (their labels are meaningless, so are the alerts):

    python demos/monitor.py ../shared/data/camvid-val/images --classes road car person sky \
        --zones '{"road": [[0, 250], [480, 250], [480, 360], [0, 360]]}' --fps 10 \
        --baseline-seconds 0.5 --sam tiny-random --clip tiny-random -o /tmp/monitor
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Alert:
    """A class entering a zone it never occupied during the baseline."""

    frame: int
    seconds: float
    zone: str
    class_name: str
    fraction: float
    track_ids: list[int] = field(default_factory=list)


def zone_masks(zones: dict[str, list], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Polygons (name -> [(x, y), ...] pixels) as bool (H, W) masks; each must cover a pixel."""
    h, w = shape
    masks = {}
    for name, points in zones.items():
        pts = np.asarray(points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise ValueError(f"zone {name!r} must be at least 3 (x, y) points, got {points}")
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts], fill=1)
        mask = np.asarray(canvas, bool)
        if not mask.any():
            raise ValueError(f"zone {name!r} covers no pixel of the {w}x{h} frame")
        masks[name] = mask
    return masks


class ZoneMonitor:
    """Which classes occupy each zone: learned over ``baseline_frames`` frames, then alerts.

    Args:
        zones: name -> bool (H, W) mask.
        classes: the class names of the results.
        baseline_frames: how many first frames the baseline learns from.
        min_fraction: a class occupies a zone when it covers at least this share of it.
        fps: frames per second, for the alerts' times.
    """

    def __init__(self, zones, classes, baseline_frames: int, min_fraction=0.02, fps=10.0):
        if baseline_frames < 1:
            raise ValueError(f"the baseline needs at least one frame, got {baseline_frames}")
        self.zones, self.classes = zones, list(classes)
        self.baseline_frames, self.min_fraction, self.fps = baseline_frames, min_fraction, fps
        self.baseline: dict[str, set[int]] = {z: set() for z in zones}
        self.inside: dict[str, set[int]] = {z: set() for z in zones}
        self.seen = 0

    def occupancy(self, label_map: np.ndarray) -> dict[str, dict[int, float]]:
        """Per zone, class index -> share of the zone it covers (those >= min_fraction)."""
        out = {}
        for name, mask in self.zones.items():
            labels = label_map[mask]
            counts = np.bincount(labels[labels >= 0], minlength=len(self.classes)) / mask.sum()
            out[name] = {
                int(c): float(counts[c]) for c in np.flatnonzero(counts >= self.min_fraction)
            }
        return out

    def update(self, index: int, result) -> list[Alert]:
        """Feed one frame's result; returns the alerts it raises (none during the baseline)."""
        occupied = self.occupancy(result.label_map)
        self.seen += 1
        if self.seen <= self.baseline_frames:
            for name, found in occupied.items():
                self.baseline[name] |= set(found)
            return []
        alerts = []
        for name, found in occupied.items():
            new = set(found) - self.baseline[name]
            for c in sorted(new - self.inside[name]):  # one alert per entry
                ids = sorted({s.track_id for s in result.segments
                              if s.track_id is not None and s.class_index == c
                              and (s.mask & self.zones[name]).any()})  # fmt: skip
                alerts.append(Alert(index, index / self.fps, name, self.classes[c],
                                    round(found[c], 4), ids))  # fmt: skip
            self.inside[name] = new
        return alerts


def draw_alert(result, zones: dict[str, list], alerts: list[Alert]) -> Image.Image:
    """The frame's overlay with the zones outlined (alerting zones in red) and the alerts."""
    image = result.overlay(legend=False)
    draw = ImageDraw.Draw(image)
    hot = {a.zone for a in alerts}
    for name, points in zones.items():
        colour = (255, 0, 0) if name in hot else (255, 255, 0)
        draw.polygon([tuple(p) for p in points], outline=colour, width=2)
    text = "; ".join(f"{a.class_name} in {a.zone}" for a in alerts)
    draw.rectangle([0, 0, image.width, 14], fill=(0, 0, 0))
    draw.text(
        (2, 1), f"ALERT frame {alerts[0].frame}: {text}" if alerts else "", fill=(255, 80, 80)
    )
    return image


def parse_args(argv=None) -> argparse.Namespace:
    from ovseg.constants import DEFAULT_CLIP, DEFAULT_SAM

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", help="video file, folder of frames, or camera index")
    p.add_argument("--classes", nargs="+", required=True, metavar="NAME")
    p.add_argument("--zones", required=True, help='JSON: {"name": [[x, y], ...], ...}')
    p.add_argument("--baseline-seconds", type=float, default=2.0)
    p.add_argument("--min-fraction", type=float, default=0.02)
    p.add_argument("--fps", type=float, default=None, help="override the source's frame rate")
    p.add_argument("--keyframe-every", type=int, default=10)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--sam", default=DEFAULT_SAM)
    p.add_argument("--clip", default=DEFAULT_CLIP)
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--out", required=True, type=Path, help="folder for the alerts")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from ovseg._io import atomic_write_text
    from ovseg.pipeline import Segmenter
    from ovseg.proposals.grid import GridOptions
    from ovseg.video import VideoStream, open_frames

    args = parse_args(argv)
    try:
        zones = json.loads(args.zones)
        if not isinstance(zones, dict) or not zones:
            raise ValueError('--zones must be a JSON object {"name": [[x, y], ...]}')
        source = open_frames(args.video, max_frames=args.max_frames)
        tiny = args.sam == "tiny-random"
        grid = GridOptions(points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0) \
            if tiny else None  # fmt: skip
        seg = Segmenter(args.sam, args.clip, args.device, grid=grid)
        stream = VideoStream(seg, args.classes, keyframe_every=args.keyframe_every)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"monitor: error: {e}", file=sys.stderr)
        return 2
    fps = args.fps or source.fps
    args.out.mkdir(parents=True, exist_ok=True)
    monitor, masks, log = None, None, []
    for index, frame in source:
        result = stream.step(frame, index)
        if monitor is None:
            masks = zone_masks(zones, result.shape)
            baseline = max(1, round(args.baseline_seconds * fps))
            monitor = ZoneMonitor(masks, stream.classes, baseline, args.min_fraction, fps)
            first = Image.fromarray(result.image)  # the zones on the first frame, to check them
            for points in zones.values():
                ImageDraw.Draw(first).polygon([tuple(p) for p in points], outline=(255, 255, 0))
            first.save(args.out / "zones.png")
        alerts = monitor.update(index, result)
        if alerts:
            path = args.out / f"alert_{index:06d}.png"
            image = draw_alert(result, zones, alerts)
            tmp = path.with_name(f".{path.name}.tmp")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            log.extend({**asdict(a), "image": path.name} for a in alerts)
            atomic_write_text(args.out / "alerts.json", json.dumps(log, indent=1))
            for a in alerts:
                print(f"frame {a.frame} ({a.seconds:.1f} s): {a.class_name} entered "
                      f"{a.zone} ({100 * a.fraction:.0f}%), objects {a.track_ids}")  # fmt: skip
    atomic_write_text(args.out / "alerts.json", json.dumps(log, indent=1))
    baseline = {z: [stream.classes[c] for c in sorted(s)] for z, s in monitor.baseline.items()}
    print(f"baseline: {baseline}; {len(log)} alert(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
