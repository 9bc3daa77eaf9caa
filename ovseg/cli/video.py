"""``ovseg video INPUT --classes ... -o OUT_DIR``: segment a clip with stable object ids.

Every check that needs no model (classes, options, device, the input and the output folder)
runs before any model loads. Outputs and resuming: see :mod:`ovseg.video.outputs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovseg.cli._args import (
    add_grid_arguments,
    add_method_arguments,
    add_model_arguments,
    build_segmenter,
    method_settings,
)

DESCRIPTION = """\
Segment a video into an open vocabulary, with stable object ids. INPUT is a video file (mp4,
mov, avi, mkv, ...), a folder of frames (sorted by name) or a camera index (0 = /dev/video0).
Keyframes get the full segmentation (the dense method and SAM's automatic grid); between them
each object's mask is propagated with SAM prompted from its previous box and mask (with a SAM 2
model: SAM 2's video memory); new objects found on keyframes get new ids; an object's class is
the running mean of its probabilities.
Under OUT: labels/NNNNNN.png per frame (NNNNNN = the frame's index; class i = value i, 255 =
unlabeled), overlay.mp4 (ids and classes drawn) and video.json (per object id its class,
score, first and last frame; per frame each object's COCO RLE mask and box). Ctrl-C leaves
every finished frame and a valid JSON; the same command again resumes."""

EPILOG = """\
examples:
  ovseg video drive.mp4 --classes road car person sky --stuff road sky -o out/
  ovseg video frames/ --classes road car -o out/ --stride 2 --max-frames 100
  ovseg video drive.mp4 --classes car --sam tiny-random --clip tiny-random -o out/"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "video",
        help="segment a video, a folder of frames or a camera with stable object ids",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="video file, folder of frames, or camera index")
    p.add_argument(
        "--classes", nargs="+", action="extend", required=True, metavar="NAME",
        help='class names (commas split, ";" joins synonyms); may be repeated',
    )  # fmt: skip
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument(
        "--stuff", nargs="+", action="extend", default=[], metavar="NAME",
        help="classes never tracked as objects (e.g. road sky): they come from each frame's map",
    )  # fmt: skip
    p.add_argument(
        "--background", nargs="+", action="extend", default=[], metavar="NAME",
        help="background names (compete with the classes, label nothing)",
    )  # fmt: skip
    sel = p.add_argument_group("frames")
    sel.add_argument("--stride", type=int, default=1, metavar="N", help="every Nth frame (1)")
    sel.add_argument("--start", type=int, default=0, metavar="I", help="first frame index (0)")
    sel.add_argument("--end", type=int, default=None, metavar="I", help="stop before frame I")
    sel.add_argument("--max-frames", type=int, default=None, metavar="N", help="at most N frames")
    track = p.add_argument_group("tracking")
    track.add_argument(
        "--keyframe-every", type=int, default=10, metavar="K",
        help="full segmentation (SAM's grid) every K processed frames, propagation between (10)",
    )  # fmt: skip
    track.add_argument(
        "--match-iou", type=float, default=0.5, metavar="T",
        help="mask IoU at which a keyframe proposal is an existing object (0.5)",
    )  # fmt: skip
    track.add_argument(
        "--min-area", type=int, default=16, metavar="PX", help="smallest object in pixels (16)"
    )
    track.add_argument(
        "--max-objects", type=int, default=100, metavar="N", help="objects tracked at once (100)"
    )
    add_model_arguments(p)
    add_method_arguments(p)
    add_grid_arguments(p)
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _error(message: object, code: int = 2) -> int:
    print(f"ovseg video: error: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace, source_name: str) -> dict:
    from ovseg.result import check_png_classes
    from ovseg.scoring.vocabulary import Vocabulary, parse_classes

    classes = [c for token in args.classes for c in parse_classes(token)]
    background = [c for token in args.background for c in parse_classes(token)]
    stuff = [c for token in args.stuff for c in parse_classes(token)]
    vocab = Vocabulary(classes, args.templates, background)
    check_png_classes(len(vocab.classes))  # every run writes label PNGs
    unknown = [s for s in stuff if s not in vocab.classes]
    if unknown:
        raise ValueError(f"--stuff names {unknown} are not among --classes {vocab.classes}")
    method = method_settings(args, grid_used=True)
    if method["sam"] in (None, "", "none"):
        raise ValueError("video needs a SAM model (--sam) to propose and propagate objects")
    return {
        "input": source_name,
        "classes": vocab.classes,
        "background": background,
        "stuff": stuff,
        **method,
        "stride": args.stride,
        "start": args.start,
        "end": args.end,
        "max_frames": args.max_frames,
        "keyframe_every": args.keyframe_every,
        "match_iou": args.match_iou,
        "min_area": args.min_area,
        "max_objects": args.max_objects,
    }


def run(args: argparse.Namespace) -> int:
    from ovseg.video.io import open_frames
    from ovseg.video.outputs import ClipWriter

    try:
        source = open_frames(
            args.input, start=args.start, end=args.end, stride=args.stride,
            max_frames=args.max_frames,
        )  # fmt: skip
        name = source.name if source.name.startswith("camera") else str(Path(args.input).resolve())
        settings = _settings(args, name)
        if source.count == 0:
            raise ValueError(f"no frame of {args.input} is selected by --start/--end/--stride")
        info = {"input": source.name, "fps": source.fps / args.stride}
        if source.size is not None:
            info.update(height=source.size[0], width=source.size[1])
        writer = ClipWriter(args.out, settings["classes"], settings, info,
                            overlay=not args.no_overlay)  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _error(e)
    if writer.complete:
        print(f"ovseg video: {args.out} is complete already ({len(writer.records)} frames)",
              file=sys.stderr)  # fmt: skip
        return 0
    try:
        stream = _stream(args, settings)
        if writer.state is not None:
            stream.load_state_dict(writer.state)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as e:
        return _error(e)
    return _loop(args, source, stream, writer)


def _stream(args, s: dict):
    from ovseg.video.stream import VideoStream

    seg = build_segmenter({**s, "grid": {}}, args.device)
    return VideoStream(
        seg, s["classes"], background=s["background"], stuff=s["stuff"],
        keyframe_every=s["keyframe_every"], match_iou=s["match_iou"], min_area=s["min_area"],
        max_objects=s["max_objects"], **s["grid"],
    )  # fmt: skip


def _loop(args, source, stream, writer) -> int:
    from tqdm import tqdm

    if writer.done:
        print(f"ovseg video: resuming after {len(writer.done)} frame(s) already written",
              file=sys.stderr)  # fmt: skip
    bar = tqdm(total=source.count, desc="video", unit="frame", disable=args.no_progress)
    try:
        segmented = writer.run(source, stream, on_frame=lambda index: bar.update(1))
    except KeyboardInterrupt:
        bar.close()
        print(f"ovseg video: interrupted: {len(writer.records)} frame(s) written to {args.out} "
              "(labels, JSON, overlay so far). Run the same command again to resume.",
              file=sys.stderr)  # fmt: skip
        return 130
    except (ValueError, OSError) as e:
        bar.close()
        return _error(f"{e} ({len(writer.records)} frame(s) written; rerun to resume)", 1)
    bar.close()
    objects = len({o["id"] for r in writer.records for o in r["objects"]})
    print(f"ovseg video: {len(writer.records)} frame(s), {objects} object(s) -> {args.out} "
          f"({segmented} segmented now)", file=sys.stderr)  # fmt: skip
    return 0
