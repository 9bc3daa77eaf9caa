"""The Gradio page: components and event wiring only; the logic is in
:mod:`ovseg.app.handlers` and :mod:`ovseg.app.render`. Importing this module imports Gradio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:
    import gradio as gr
except ModuleNotFoundError as e:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "the ovseg app needs Gradio: pip install 'ovseg[app]'", name=e.name
    ) from e

from ovseg.app import find, handlers
from ovseg.app.render import render
from ovseg.app.session import MODES, Session, Settings, example_images
from ovseg.app.tempfiles import clean_stale
from ovseg.app.video import add_video_tab
from ovseg.constants import APP_MAX_SIDE

DEFAULT_MAX_FILE_SIZE = "50mb"  # an upload above it is refused by the server (HTTP 413)
# Gradio's own cached copies (uploads, outputs): every 10 min, those older than an hour go,
# and all of them when the server stops.
DELETE_CACHE = (600, 3600)

DEFAULT_CLASSES = "road; street, sidewalk, car, building, tree, sky, person"
HELP = (
    "Upload, paste or snap an image (or pick an example), type your classes, then either "
    "**segment everything** (automatic mode) or **click on objects** in the result (points "
    "mode; choose *negative* to cut an object back), **click two corners** (boxes mode), or "
    "**draw** on an object (scribble mode). Prompted objects are outlined (latest in yellow)."
)


def describe_models(segmenter, models: dict[str, str] | None = None) -> str:
    """A Markdown line naming the models (fixed at launch), the method and the device."""
    from ovseg.models.weights import SAM_CHECKPOINTS

    models = dict(models or {})
    sam = models.get("sam")
    if not sam and segmenter.has_sam:  # SAM 1: its encoder; SAM 2: its class; SAM 3: its bundle
        model = getattr(segmenter.proposer, "model", None) or segmenter.proposer.sam
        sam = type(getattr(model, "image_encoder", model)).__name__
    clip = models.get("clip") or (segmenter.clip.name if "clip" in segmenter.method.needs else "-")
    return (
        f"**Models** (fixed at launch): SAM `{sam}`, CLIP `{clip}`, method "
        f"`{segmenter.method.name}`, "
        f"device `{segmenter.device}`. Restart with `ovseg app --sam "
        f"{{{','.join(SAM_CHECKPOINTS)}}} --clip ARCH/TAG` to change them."
    )


def _close(session: Session | None) -> None:
    if session is not None:
        session.close()


@dataclass(frozen=True)
class UnreadableImage:
    """What the image input passes on for an upload it cannot read: ovseg's message."""

    message: str


def ovseg_image_errors(component):
    """Make a ``gr.Image`` input pass an upload it cannot read (not an image, or one too
    large to decode safely) on as :class:`UnreadableImage`, so that the page says so in
    ovseg's words instead of Gradio's bare "Error" on every output; returns it.

    (The component keeps its class: a Gradio component subclass would write a ``.pyi`` file
    next to this module when it is defined.)
    """
    preprocess = component.preprocess

    def checked(payload):
        from PIL import Image

        try:
            return preprocess(payload)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            from ovseg.models.weights import reason

            name = getattr(payload, "orig_name", None) or "the upload"
            if isinstance(e, Image.UnidentifiedImageError):
                why = "not an image file"
            else:  # the server's own path of the upload is none of the visitor's business
                why = reason(e).replace(str(getattr(payload, "path", None) or name), name)
            return UnreadableImage(
                f"Could not read this image ({name}): {why}. Upload a PNG, JPEG, WebP, BMP "
                "or TIFF image."
            )

    component.preprocess = checked
    return component


def _with_upload_limit(app, max_file_size):
    """Make ``app.launch`` refuse uploads above ``max_file_size`` unless told otherwise."""
    launch = app.launch

    def launch_with_limit(*args, max_file_size=max_file_size, **kwargs):
        return launch(*args, max_file_size=max_file_size, **kwargs)

    launch_with_limit.__doc__ = launch.__doc__
    app.launch = launch_with_limit
    return app


def build_app(
    segmenter,
    *,
    models: dict[str, str] | None = None,
    title: str = "ovseg: open-vocabulary segmentation",
    default_classes: str = DEFAULT_CLASSES,
    max_file_size: str | int | None = DEFAULT_MAX_FILE_SIZE,
    max_side: int | None = APP_MAX_SIDE,
):
    """The interactive app as a ``gr.Blocks`` (queue enabled); launch it with ``.launch()``.

    Args:
        segmenter: a :class:`~ovseg.pipeline.Segmenter`, shared by all sessions (its ``lock``
            serialises model calls); per-user state lives in ``gr.State``.
        models: optional ``{"sam": name, "clip": name}`` shown on the page.
        title: page title; ``default_classes``: the class box's initial text.
        max_file_size: the largest upload ``.launch()`` accepts (bytes, or ``"50mb"``...;
            None: no limit); ``.launch(max_file_size=...)`` overrides it.
        max_side: uploads with a longer side above it are segmented downsized to it (the page
            says so; label PNG downloads come back at the upload's size); None: never.

    Temporary folders of earlier app processes that were killed are removed here; this app's
    own go when their session ends and when the process exits (:mod:`ovseg.app.tempfiles`).
    """
    from ovseg.scoring.vocabulary import template_sets

    clean_stale()
    templates = list(template_sets())
    default_templates = segmenter.templates if segmenter.templates in templates else templates[0]

    with gr.Blocks(title=title, delete_cache=DELETE_CACHE) as app:
        gr.Markdown(f"## {title}\n{HELP}")
        state = gr.State(None, delete_callback=_close)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                image_in = gr.Image(
                    label="Image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "webcam", "clipboard"],
                    height=260,
                    elem_id="ovseg-input",
                )
                ovseg_image_errors(image_in)
                examples = example_images()
                if examples:
                    gr.Examples(examples, inputs=image_in, label="Examples (CamVid frames)")
                classes = gr.Textbox(
                    label="Classes (comma or newline separated; ';' joins synonyms)",
                    value=default_classes,
                    lines=2,
                    elem_id="ovseg-classes",
                )
                mode = gr.Radio(list(MODES), value="automatic", label="Mode", elem_id="ovseg-mode")
                run_btn = gr.Button("Segment everything", variant="primary", elem_id="ovseg-run")
                point = gr.Radio(
                    [
                        ("+ new object", "new"),
                        ("+ add to last object", "add"),
                        ("− negative: remove from last object", "remove"),
                    ],
                    value="new",
                    label="A click adds",
                    visible=False,
                    elem_id="ovseg-point",
                )
                brush_kind = gr.Radio(
                    [("strokes on the object", "scribble"), ("rough mask of the object", "mask")],
                    value="scribble",
                    label="The brush draws",
                    visible=False,
                )
                editor = gr.ImageEditor(
                    label="Draw on the object",
                    type="numpy",
                    image_mode="RGBA",
                    sources=[],
                    transforms=(),
                    layers=False,
                    visible=False,
                    format="png",
                    elem_id="ovseg-editor",
                    brush=gr.Brush(colors=["#ff2d2d"], color_mode="fixed"),
                )
                brush_btn = gr.Button("Add drawing as an object", visible=False)
                with gr.Row():
                    undo_btn = gr.Button("Undo last prompt", elem_id="ovseg-undo")
                    clear_btn = gr.Button("Clear prompts", elem_id="ovseg-clear")
                finds = find.available(segmenter)  # the method protocol says, not its name
                with gr.Accordion("Find all", open=True, visible=finds):
                    find_text = gr.Textbox(
                        label="Phrases (every instance of each; comma separated)",
                        value="car, person",
                        elem_id="ovseg-find",
                    )
                    threshold_name = "threshold" in segmenter.method.options_names()
                    find_threshold = gr.Slider(
                        0.0,
                        1.0,
                        value=getattr(segmenter.config(), "threshold", 0.5),
                        step=0.01,
                        label="Instance score threshold",
                        visible=threshold_name,
                    )
                    find_btn = gr.Button("Find all", elem_id="ovseg-find-run")
                with gr.Accordion("Settings", open=False):
                    threshold = gr.Slider(
                        0.0,
                        1.0,
                        value=segmenter.config().score_threshold,
                        step=0.01,
                        label="Score threshold (min class probability)",
                    )
                    template = gr.Dropdown(
                        templates, value=default_templates, label="Prompt templates"
                    )
                    gr.Markdown(describe_models(segmenter, models))
            with gr.Column(scale=3, min_width=400):
                status = gr.Markdown("Upload an image to start.", elem_id="ovseg-status")
                canvas = gr.Image(
                    label="Segmentation: click here in points or boxes mode",
                    interactive=False,
                    format="png",
                    elem_id="ovseg-canvas",
                    buttons=["download", "fullscreen"],
                )
                visible = gr.CheckboxGroup([], label="Show classes", elem_id="ovseg-visible")
                found = gr.CheckboxGroup(
                    [], label="Found instances (score)", visible=finds, elem_id="ovseg-found"
                )
                legend = gr.HTML("<i>No labels yet.</i>", elem_id="ovseg-legend")
                with gr.Row():
                    confidence = gr.Image(
                        label="Confidence (dark = unsure or unlabeled)",
                        interactive=False,
                        format="png",
                        height=220,
                        elem_id="ovseg-confidence",
                    )
                    with gr.Column():
                        dl_png = gr.DownloadButton(
                            "Label PNG", interactive=False, elem_id="ovseg-dl-png"
                        )
                        dl_json = gr.DownloadButton(
                            "COCO JSON", interactive=False, elem_id="ovseg-dl-json"
                        )

        add_video_tab(segmenter, default_classes)
        views = [state, canvas, confidence, legend, visible, dl_png, dl_json, status, found]
        settings_in = [classes, template, threshold]

        def show(session: Session | None, toast: bool = True) -> list[Any]:
            view = render(session)
            if toast and view.warning and view.status:
                gr.Warning(view.status)
            text = f"⚠️ {view.status}" if view.warning else view.status
            return [
                session,
                view.canvas,
                view.confidence,
                view.legend,
                gr.CheckboxGroup(choices=view.classes, value=view.visible),
                gr.DownloadButton(value=view.labels_png, interactive=view.labels_png is not None),
                gr.DownloadButton(value=view.coco_json, interactive=view.coco_json is not None),
                text,
                gr.CheckboxGroup(choices=view.found, value=view.found_visible),
            ]

        def editor_value(session: Session | None):
            if session is None or session.image is None:
                return None
            return {"background": session.image, "layers": [], "composite": session.image}

        def on_image(session, path, progress=gr.Progress()):  # noqa: B008 (Gradio's API)
            if isinstance(path, UnreadableImage):
                session = handlers.upload(segmenter, session, None)  # starts over
                session.say(path.message, warning=True)
            else:
                session = handlers.upload(
                    segmenter, session, path, progress=progress, max_side=max_side
                )
            return [*show(session), editor_value(session)]

        def on_run(session, text, tmpl, thr, progress=gr.Progress()):  # noqa: B008 (Gradio's API)
            session = handlers.run_automatic(
                segmenter, session, Settings(text, tmpl, thr), progress=progress
            )
            return show(session)

        def on_click(session, text, tmpl, thr, mode_now, action, evt: gr.SelectData):
            x, y = evt.index[:2]
            return show(
                handlers.click(
                    segmenter, session, Settings(text, tmpl, thr), mode_now, x, y, action
                )
            )

        def on_brush(session, text, tmpl, thr, drawing, kind):
            session = handlers.add_brush(
                segmenter, session, Settings(text, tmpl, thr), drawing, kind
            )
            return [*show(session), editor_value(session)]

        def on_undo(session, text, tmpl, thr):
            return show(handlers.undo(segmenter, session, Settings(text, tmpl, thr)))

        def on_clear(session, text, tmpl, thr):
            return show(handlers.clear(segmenter, session, Settings(text, tmpl, thr)))

        def on_settings(session, text, tmpl, thr):
            return show(
                handlers.refresh(segmenter, session, Settings(text, tmpl, thr)), toast=False
            )

        def on_find(session, text, thr):
            return show(find.find_all(segmenter, session, text, thr if threshold_name else None))

        def on_found(session, names):
            return show(find.set_found_visible(session, names), toast=False)

        def on_visible(session, names):
            return show(handlers.set_visible(session, names), toast=False)

        def on_mode(session, mode_now):
            session = handlers.mode_changed(session, mode_now)
            painting = mode_now == "scribble"
            return [
                *show(session, toast=False),
                gr.Button(visible=mode_now == "automatic"),
                gr.Radio(visible=mode_now == "points"),
                gr.Radio(visible=painting),
                gr.ImageEditor(visible=painting),
                gr.Button(visible=painting),
            ]

        image_in.change(on_image, [state, image_in], [*views, editor])
        run_btn.click(on_run, [state, *settings_in], views)
        canvas.select(on_click, [state, *settings_in, mode, point], views)
        brush_btn.click(on_brush, [state, *settings_in, editor, brush_kind], [*views, editor])
        undo_btn.click(on_undo, [state, *settings_in], views)
        clear_btn.click(on_clear, [state, *settings_in], views)
        classes.submit(on_settings, [state, *settings_in], views)
        classes.blur(on_settings, [state, *settings_in], views)
        template.input(on_settings, [state, *settings_in], views)
        threshold.release(on_settings, [state, *settings_in], views)
        visible.input(on_visible, [state, visible], views)
        find_btn.click(on_find, [state, find_text, find_threshold], views)
        find_text.submit(on_find, [state, find_text, find_threshold], views)
        found.input(on_found, [state, found], views)
        mode.change(on_mode, [state, mode], [*views, run_btn, point, brush_kind, editor, brush_btn])
    app.queue(max_size=64)
    return _with_upload_limit(app, max_file_size)
