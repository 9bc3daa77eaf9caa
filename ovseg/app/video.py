"""The app's video section: upload a short clip, get the overlay video and the JSON.

:func:`segment_clip` is the logic (plain function, user mistakes become messages);
:func:`add_video_tab` adds its components to the page. Importing this module imports Gradio
only through :func:`add_video_tab`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovseg.app.tempfiles import make_folder, remove_folder

MAX_FRAMES = 300
HELP = (
    "Upload a short clip (mp4, mov, avi, mkv, webm; the first {max} frames are used). Keyframes "
    "get the full segmentation; between them each object is propagated, so ids stay stable. "
    "Classes listed as *stuff* (road, sky) come from each frame's map and are never tracked."
)


@dataclass
class ClipOutput:
    """What the page shows: the overlay video and JSON paths (None on a problem), a message,
    and the temporary folder holding them (None on a problem; see :mod:`ovseg.app.tempfiles`:
    the page removes it with the next clip or when the session ends)."""

    overlay: str | None
    json: str | None
    status: str
    folder: Path | None = None


def segment_clip(
    segmenter, path, classes: str, stuff: str = "", keyframe_every: int = 10,
    max_frames: int = MAX_FRAMES, progress=None,
) -> ClipOutput:  # fmt: skip
    """Segment the clip at ``path`` into a fresh temporary folder (the outputs of ``ovseg
    video``). ``classes`` and ``stuff`` are comma- or newline-separated (stuff names that are
    not among the classes are ignored); ``progress(fraction, desc=...)`` is called per
    frame."""
    from ovseg.scoring.vocabulary import parse_classes
    from ovseg.video.io import open_frames
    from ovseg.video.outputs import JSON_NAME, OVERLAY_NAME, ClipWriter
    from ovseg.video.stream import VideoStream

    if not path:
        return ClipOutput(None, None, "Upload a video first.")
    try:
        names = parse_classes(classes or "")
        stuff_names = [s for s in parse_classes(stuff or "") if s in names]
        stream = VideoStream(segmenter, names, stuff=stuff_names,
                             keyframe_every=int(keyframe_every))  # fmt: skip
        source = open_frames(path, max_frames=max_frames)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return ClipOutput(None, None, f"⚠️ {e}")
    out = make_folder("video")
    info = {"input": Path(path).name, "fps": source.fps}
    settings = {"input": Path(path).name, "classes": stream.classes, "stuff": stuff,
                "keyframe_every": int(keyframe_every)}  # fmt: skip
    writer = ClipWriter(out, stream.classes, settings, info)
    total = source.count or max_frames

    def tick(index: int) -> None:
        if progress is not None:
            done = len(writer.records)
            progress(done / total, desc=f"frame {done} of {total}")

    try:
        writer.run(source, stream, on_frame=tick)
    except (ValueError, OSError) as e:
        remove_folder(out)
        return ClipOutput(None, None, f"⚠️ {e}")
    except BaseException:  # Ctrl-C, a closed page: nothing stays behind
        remove_folder(out)
        raise
    objects = len({o["id"] for r in writer.records for o in r["objects"]})
    return ClipOutput(
        str(out / OVERLAY_NAME),
        str(out / JSON_NAME),
        f"{len(writer.records)} frames, {objects} objects (ids in the overlay and the JSON).",
        out,
    )


def add_video_tab(segmenter, default_classes: str) -> None:
    """The video section's components and events, inside the current ``gr.Blocks``."""
    import gradio as gr

    with gr.Accordion("Video: segment a short clip with stable object ids", open=False):
        gr.Markdown(HELP.format(max=MAX_FRAMES))
        with gr.Row():
            with gr.Column():
                clip = gr.Video(label="Clip", sources=["upload"], elem_id="ovseg-video-in")
                classes = gr.Textbox(label="Classes", value=default_classes, lines=2)
                stuff = gr.Textbox(label="Stuff (never tracked)", value="road; street, sky")
                keyframes = gr.Slider(1, 30, value=10, step=1, label="Keyframe every K frames")
                run = gr.Button("Segment the clip", variant="primary", elem_id="ovseg-video-run")
            with gr.Column():
                status = gr.Markdown("", elem_id="ovseg-video-status")
                overlay = gr.Video(label="Overlay", interactive=False, elem_id="ovseg-video-out")
                json_file = gr.File(label="JSON (objects, per-frame RLE masks and boxes)")

        last = gr.State(None, delete_callback=remove_folder)  # this session's last clip folder

        def on_run(folder, path, text, stuff_text, k, progress=gr.Progress()):  # noqa: B008
            remove_folder(folder)  # the previous clip's outputs: the page has its copies
            out = segment_clip(segmenter, path, text, stuff_text, int(k), progress=progress)
            return out.folder, out.overlay, out.json, out.status

        run.click(
            on_run, [last, clip, classes, stuff, keyframes], [last, overlay, json_file, status]
        )
