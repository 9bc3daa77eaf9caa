"""SAM 3 video memory over a long stream: ovseg's Sam3VideoStream against the official
streaming loop, side by side in one run.

    python benchmarks/sam3_video.py [--frames 500] [--official 100] [--prompts car,road]
                                    [--shrink 1] [--sam sam3-tiny-random] [-o benchmarks/results]

Both sides stream the CamVid frames (cycled to ``--frames``; generated frames when the data is
absent) through the same model: the stream for ``--frames`` frames, the official loop
(``Sam3VideoProcessor`` -> ``Sam3VideoModel`` -> ``postprocess_outputs``, nothing dropped) for
the first ``--official`` frames. Every 25 frames: the bytes of every tensor the session holds
(each storage once), the tracked objects, the process RSS. The two sides' outputs are checked
equal on the frames both ran. Writes ``sam3_video_<sam>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from ovseg.image import load_image
from ovseg.models.sam3_weights import build_sam3
from ovseg.proposals.sam3_video import Sam3VideoStream, session_bytes, video_processor

CAMVID = Path(os.environ.get("OVSEG_CAMVID") or Path(__file__).resolve().parents[2] / "shared"
              / "data" / "camvid-val")  # fmt: skip
EVERY = 25


def _frames(data: Path) -> list[np.ndarray]:
    paths = sorted((data / "images").glob("*.png")) if data.is_dir() else []
    if paths:
        return [load_image(p) for p in paths]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (360, 480, 3), dtype=np.uint8) for _ in range(20)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sam", default="sam3-tiny-random")
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--official", type=int, default=100)
    ap.add_argument("--prompts", default="car,road")
    ap.add_argument("--shrink", type=int, default=1, help="keep every N-th pixel of the frames")
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    frames = [np.ascontiguousarray(f[:: args.shrink, :: args.shrink]) for f in _frames(args.data)]
    prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    sam = build_sam3(args.sam, "cpu", random_weights=True)
    proc = psutil.Process()
    stream = Sam3VideoStream(sam, prompts)
    processor = video_processor(sam)
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    processor.add_text_prompt(session, prompts)
    rows, same, start = [], True, time.perf_counter()
    for f in range(args.frames):
        frame = frames[f % len(frames)]
        got = stream.step(frame)
        official = None
        if f < args.official:
            inputs = processor(images=frame, return_tensors="pt")
            with torch.inference_mode():
                out = sam.model(inference_session=session, frame=inputs.pixel_values[0])
                ref = processor.postprocess_outputs(session, out, inputs.original_sizes)
            same &= np.array_equal(got.obj_ids, ref["object_ids"].numpy())
            same &= np.array_equal(got.masks, ref["masks"].numpy())
            official = session_bytes(session)
        if (f + 1) % EVERY == 0 or f == 0:
            rows.append(
                dict(
                    frame=f + 1,
                    stream_mb=session_bytes(stream.session) / 2**20,
                    official_mb=None if official is None else official / 2**20,
                    objects=len(stream.session.obj_ids),
                    rss_mb=proc.memory_info().rss / 2**20,
                    seconds=time.perf_counter() - start,
                )
            )
            print(rows[-1], flush=True)
        if f + 1 == args.official:
            del session  # the official loop's state is released before the stream goes on
    result = dict(sam=args.sam, prompts=prompts, frames=args.frames, same_outputs=bool(same),
                  rows=rows)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"sam3_video_{args.sam}"
    lines = [
        f"# SAM 3 video state over {args.frames} frames ({args.sam}, prompts {prompts})\n",
        f"Outputs equal to the official loop on its {args.official} frames: {same}.\n",
        "| frame | stream state (MiB) | official loop state (MiB) | objects | RSS (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        off = "" if r["official_mb"] is None else f"{r['official_mb']:.1f}"
        lines.append(
            f"| {r['frame']} | {r['stream_mb']:.2f} | {off} | {r['objects']} | {r['rss_mb']:.0f} |"
        )
    md = "\n".join(lines) + "\n"
    for suffix, text in ((".json", json.dumps(result, indent=2)), (".md", md)):
        tmp = stem.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(stem.with_suffix(suffix))
    print(md)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
