"""The app's handlers, called directly with the tiny random models (no browser)."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from ovseg.app import handlers as H
from ovseg.app.render import BRUSH, _outline, draw_prompts, legend_html, render
from ovseg.app.session import Session, Settings, example_images, file_stem
from ovseg.pipeline import Segmenter
from ovseg.proposals.grid import GridOptions
from ovseg.result import read_label_png
from ovseg.structures import Masks

CLASSES = "road; street, sky\ncar, building"
NAMES = ["road; street", "sky", "car", "building"]
SETTINGS = Settings(CLASSES, "simple", 0.0)


@pytest.fixture(scope="module")
def seg():
    grid = GridOptions(points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0)
    return Segmenter(
        "tiny-random", "tiny-random", device="cpu", templates="simple", grid=grid, method="sam-clip"
    )


@pytest.fixture()
def image(synthetic_image):
    return synthetic_image


def _loaded(seg, image):
    session = H.upload(seg, None, image, name="synthetic.png")
    assert session.image is not None and not session.warning, session.status
    return session


def _scores(seg, masks, image):
    return seg.score(Masks.from_masks(masks), NAMES, image, templates="simple")


def test_upload_loads_the_image_and_names_downloads(seg, image):
    session = _loaded(seg, image)
    np.testing.assert_array_equal(session.image, image)
    assert session.name == "synthetic" and session.result is None
    assert "160x120" in session.status


def test_embedding_is_computed_once_per_image(seg, synthetic_image):
    image = synthetic_image.copy()
    image[0, 0] = (1, 2, 3)  # content no other test uses
    calls = seg.proposer.encoder_calls
    session = _loaded(seg, image)
    assert seg.proposer.encoder_calls == calls + 1
    H.run_automatic(seg, session, SETTINGS)
    H.click(seg, session, SETTINGS, "points", 30, 80)
    H.click(seg, session, SETTINGS, "points", 100, 40, "remove")
    H.click(seg, session, SETTINGS, "boxes", 10, 10)
    H.click(seg, session, SETTINGS, "boxes", 90, 100)
    H.add_brush(seg, session, SETTINGS, _stroke(image.shape[:2]))
    H.refresh(seg, session, Settings("tree, person", "photo", 0.1))
    assert len(session.objects) == 3
    assert seg.proposer.encoder_calls == calls + 1, "prompts must reuse the cached embedding"
    other = H.upload(seg, None, image.copy())  # another session, same picture: cache hit
    H.click(seg, other, SETTINGS, "points", 50, 50)
    assert seg.proposer.encoder_calls == calls + 1


def test_automatic_mode_matches_the_segmenter_and_exports(seg, image):
    session = _loaded(seg, image)
    steps = []
    H.run_automatic(seg, session, SETTINGS, progress=lambda f, desc=None: steps.append((f, desc)))
    assert not session.warning, session.status
    expected = seg.segment(image, NAMES, templates="simple")
    result = session.result
    assert result.classes == NAMES and result.image is not None
    np.testing.assert_array_equal(result.label_map, expected.label_map)
    np.testing.assert_allclose(result.confidence, expected.confidence, atol=1e-5)
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] < 1
    assert any("labelling" in d for _, d in steps) and any("SAM" in d for _, d in steps)

    png, js = session.downloads["labels"], session.downloads["json"]
    assert png.name == "synthetic_labels.png" and js.name == "synthetic.json"
    np.testing.assert_array_equal(read_label_png(png), result.label_map)
    data = json.loads(js.read_text())
    assert [c["name"] for c in data["categories"]] == NAMES
    assert len(data["annotations"]) == len(result.segments) > 0
    assert data["ovseg"]["classes"] == NAMES


def test_render_shows_overlay_legend_confidence_and_downloads(seg, image):
    session = _loaded(seg, image)
    empty = render(session)
    assert empty.canvas.size == (160, 120) and empty.confidence is None
    np.testing.assert_array_equal(np.asarray(empty.canvas), image)
    H.run_automatic(seg, session, SETTINGS)
    view = render(session)
    assert view.canvas.size[0] > 160, "the legend panel widens the overlay"
    assert not np.array_equal(np.asarray(view.canvas)[:120, :160], image)
    assert view.confidence.size == (160, 120)
    assert view.classes == NAMES and view.visible == NAMES
    areas = session.result.areas()
    for name in NAMES:
        assert f"{name} {100 * areas[name]:.1f}%" in view.legend
    assert view.labels_png.is_file() and view.coco_json.is_file()


def test_point_click_positive_segments_the_clicked_object(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "points", 45, 90)
    assert not session.warning, session.status
    (obj,) = session.objects
    expected = seg.propose(image, points=[[45, 90]])
    np.testing.assert_array_equal(obj.mask, expected.masks[0])
    assert obj.points == ((45, 90),) and obj.labels == (1,)
    direct = seg.segment(image, NAMES, points=[[45, 90]], templates="simple")
    np.testing.assert_array_equal(session.result.label_map, direct.label_map)
    canvas = np.asarray(render(session).canvas)
    assert tuple(canvas[90, 45]) == (40, 200, 70), "the positive point is drawn in green"


def test_negative_point_refines_the_last_object(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "points", 45, 90)
    H.click(seg, session, SETTINGS, "points", 120, 60, "remove")
    assert not session.warning, session.status
    (obj,) = session.objects
    assert obj.labels == (1, 0)
    expected = seg.propose(image, points=[[45, 90], [120, 60]], point_labels=[1, 0])
    np.testing.assert_array_equal(obj.mask, expected.masks[0])
    canvas = np.asarray(render(session).canvas)
    assert tuple(canvas[60, 120]) == (230, 40, 40), "the negative point is drawn in red"
    H.click(seg, session, SETTINGS, "points", 20, 20, "add")
    assert session.objects[0].labels == (1, 0, 1) and len(session.objects) == 1


def test_prompted_object_takes_its_pixels_over_automatic_regions(seg, image):
    session = _loaded(seg, image)
    H.run_automatic(seg, session, SETTINGS)
    H.click(seg, session, SETTINGS, "points", 45, 90)
    obj = session.objects[0]
    best = int(_scores(seg, obj.mask[None], image)[0].argmax())
    assert (session.result.label_map[obj.mask] == best).all()


def test_box_from_two_clicks_and_one_undo_removes_it(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "boxes", 90, 100)
    assert session.corner == (90, 100) and not session.objects and session.result is None
    assert "opposite corner" in session.status
    H.click(seg, session, SETTINGS, "boxes", 10, 20)
    assert session.corner is None and not session.warning, session.status
    (obj,) = session.objects
    assert obj.box == (10, 20, 91, 101)
    np.testing.assert_array_equal(obj.mask, seg.propose(image, boxes=[[10, 20, 91, 101]]).masks[0])
    H.undo(seg, session, SETTINGS)
    assert not session.objects and session.corner is None and session.result is None


def test_thin_box_is_refused_with_a_message(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "boxes", 50, 50)
    H.click(seg, session, SETTINGS, "boxes", 50, 90)
    assert session.warning and "thin" in session.status and not session.objects
    assert session.corner is None and not session.history


def _stroke(shape):
    strokes = np.zeros(shape, bool)
    strokes[80:84, 25:65] = True
    return strokes


def test_scribble_and_rough_mask_from_the_editor(seg, image):
    session = _loaded(seg, image)
    strokes = _stroke(image.shape[:2])
    layer = np.zeros((*image.shape[:2], 4), np.uint8)
    layer[strokes] = (255, 45, 45, 255)
    editor = {"background": image, "layers": [layer], "composite": image}
    H.add_brush(seg, session, SETTINGS, editor, "scribble")
    assert not session.warning, session.status
    np.testing.assert_array_equal(session.objects[0].brush, strokes)
    np.testing.assert_array_equal(
        session.objects[0].mask, seg.propose(image, scribble=strokes).masks[0]
    )
    H.add_brush(seg, session, SETTINGS, strokes, "mask")
    np.testing.assert_array_equal(
        session.objects[1].mask, seg.propose(image, mask_input=strokes).masks[0]
    )
    assert [o.kind for o in session.objects] == ["scribble", "mask"]
    H.undo(seg, session, SETTINGS)
    canvas = np.asarray(render(session).canvas)[:120, :160].astype(int)
    base = np.asarray(session.result.overlay(legend=False)).astype(int)
    plain = strokes & ~_outline(session.objects[0].mask)
    assert plain.any()
    np.testing.assert_array_equal(canvas[plain], base[plain] // 2 + np.array(BRUSH) // 2)


def test_editor_layers_of_another_size_are_rescaled(image):
    layer = np.zeros((60, 80, 4), np.uint8)
    layer[10:20, 10:20, 3] = 255
    mask = H.brush_mask({"layers": [layer]}, (120, 160))
    assert mask.shape == (120, 160) and mask[20:40, 20:40].all() and mask.sum() == 400
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[5, 7, 2] = 9
    assert np.argwhere(H.brush_mask(rgb, (120, 160))).tolist() == [[5, 7]]
    with pytest.raises(ValueError, match="drawing must be"):
        H.brush_mask(np.ones(5), (120, 160))


@pytest.mark.parametrize(
    "drawing",
    [None, {"background": None, "layers": []}, {"layers": [np.zeros((120, 160, 4), np.uint8)]}],
)
def test_empty_drawing_gives_a_message(seg, image, drawing):
    session = _loaded(seg, image)
    H.add_brush(seg, session, SETTINGS, drawing)
    assert session.warning and "Draw" in session.status and not session.objects


def test_undo_steps_back_one_prompt_at_a_time(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "points", 45, 90)
    first = session.objects[0].mask.copy()
    H.click(seg, session, SETTINGS, "points", 120, 60, "add")
    H.undo(seg, session, SETTINGS)
    assert session.objects[0].points == ((45, 90),)
    np.testing.assert_array_equal(session.objects[0].mask, first)
    assert session.result is not None
    H.run_automatic(seg, session, SETTINGS)
    H.undo(seg, session, SETTINGS)
    assert session.auto is None and len(session.objects) == 1
    H.undo(seg, session, SETTINGS)
    assert not session.objects and session.result is None and not session.downloads
    H.undo(seg, session, SETTINGS)
    assert session.status == "Nothing to undo."


def test_clear_keeps_the_image(seg, image):
    session = _loaded(seg, image)
    H.run_automatic(seg, session, SETTINGS)
    H.click(seg, session, SETTINGS, "points", 45, 90)
    H.clear(seg, session, SETTINGS)
    assert session.image is not None and not session.objects and session.auto is None
    assert session.result is None and not session.history
    np.testing.assert_array_equal(np.asarray(render(session).canvas), image)


def test_class_toggles_hide_classes_in_the_overlay(seg, image):
    session = _loaded(seg, image)
    H.run_automatic(seg, session, SETTINGS)
    labels = session.result.label_map
    shown = sorted({int(v) for v in np.unique(labels) if v >= 0})
    hidden_name = NAMES[shown[0]]
    H.set_visible(session, [n for n in NAMES if n != hidden_name])
    view = render(session)
    assert hidden_name not in view.visible and len(view.visible) == len(NAMES) - 1
    assert "(hidden)" in view.legend
    canvas = np.asarray(view.canvas)[:120, :160]
    where = labels == shown[0]
    np.testing.assert_array_equal(canvas[where], image[where])
    H.set_visible(session, NAMES)
    assert not np.array_equal(np.asarray(render(session).canvas)[:120, :160][where], image[where])


def test_changing_classes_relabels_without_new_proposals(seg, image):
    session = _loaded(seg, image)
    H.run_automatic(seg, session, SETTINGS)
    auto = session.auto
    H.refresh(seg, session, Settings("water, grass", "photo", 0.0))
    assert session.auto is auto and session.result.classes == ["water", "grass"]
    expected = seg.segment(image, ["water", "grass"], templates="photo")
    np.testing.assert_array_equal(session.result.label_map, expected.label_map)
    H.refresh(seg, session, Settings("water, grass", "photo", 1.0))
    assert (session.result.label_map == -1).all()


@pytest.mark.parametrize("bad", ["garbage-file", "missing-file", "bad-array", None])
def test_bad_upload_gives_a_message_and_the_app_goes_on(seg, tmp_path, bad):
    garbage = tmp_path / "photo.png"
    garbage.write_bytes(b"not an image at all")
    value = {
        "garbage-file": str(garbage),
        "missing-file": str(tmp_path / "nope.jpg"),
        "bad-array": np.zeros((4, 4, 7), np.uint8),
        None: None,
    }[bad]
    session = H.upload(seg, None, value)
    assert session.image is None and session.status
    assert session.warning == (bad is not None)
    for after in (
        H.run_automatic(seg, session, SETTINGS),
        H.click(seg, session, SETTINGS, "points", 1, 1),
        H.add_brush(seg, session, SETTINGS, np.ones((4, 4), bool)),
    ):
        assert after.warning and "Upload an image" in after.status
    assert render(session).canvas is None


@pytest.mark.parametrize(
    "text, words", [("", "empty"), (" , ,\n ", "empty"), ("car, Car", "duplicate")]
)
def test_bad_class_list_gives_a_message(seg, image, text, words):
    session = _loaded(seg, image)
    H.click(seg, session, Settings(text, "simple", 0.0), "points", 45, 90)
    assert session.warning and words in session.status and session.result is None
    assert len(session.objects) == 1, "the object is kept; it is labeled once classes are typed"
    assert legend_html(session).count("unlabeled") == 1
    H.refresh(seg, session, SETTINGS)
    assert session.result is not None and not session.warning


def test_unknown_template_set_gives_a_message(seg, image):
    session = _loaded(seg, image)
    H.run_automatic(seg, session, Settings(CLASSES, "fancy", 0.0))
    assert session.warning and "fancy" in session.status


@pytest.mark.parametrize(
    "mode, x, y, point, words",
    [
        ("points", 200, 50, "new", "not on the legend"),
        ("points", 10, 130, "new", "not on the legend"),
        ("automatic", 10, 10, "new", "points or boxes"),
        ("scribble", 10, 10, "new", "points or boxes"),
        ("points", 10, 10, "remove", "add an object first"),
    ],
)
def test_misplaced_clicks_give_messages(seg, image, mode, x, y, point, words):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, mode, x, y, point)
    assert session.warning and words in session.status and not session.objects


def test_mode_change_drops_a_half_drawn_box(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "boxes", 20, 20)
    assert tuple(np.asarray(render(session).canvas)[20, 25]) == (255, 221, 0), "corner cross"
    H.mode_changed(session, "points")
    assert session.corner is None
    with pytest.raises(ValueError, match="mode must be one of"):
        H.mode_changed(session, "lasso")


def _scene(seed, shape):
    rng = np.random.default_rng(seed)
    img = np.zeros((*shape, 3), np.uint8)
    img[:] = rng.integers(0, 255, 3)
    h, w = shape
    img[h // 3 : 2 * h // 3, w // 4 : w // 2] = rng.integers(0, 255, 3)
    return img


def test_concurrent_sessions_do_not_leak_state(seg):
    images = [_scene(1, (120, 160)), _scene(2, (90, 200))]
    clicks = [(50, 60), (120, 30)]
    solo = []
    for img, (x, y) in zip(images, clicks, strict=True):
        s = H.upload(seg, None, img)
        H.run_automatic(seg, s, SETTINGS)
        H.click(seg, s, SETTINGS, "points", x, y)
        solo.append(s.result.label_map.copy())
    barrier = threading.Barrier(2)

    def user(i):
        img, (x, y) = images[i], clicks[i]
        barrier.wait()
        out = []
        for _ in range(3):
            s = H.upload(seg, None, img)
            H.run_automatic(seg, s, SETTINGS)
            H.click(seg, s, SETTINGS, "points", x, y)
            out.append(s)
        return out

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(user, range(2)))
    for i, sessions in enumerate(runs):
        for s in sessions:
            np.testing.assert_array_equal(s.result.image, images[i])
            np.testing.assert_array_equal(s.result.label_map, solo[i])
            assert s.objects[0].mask.shape == images[i].shape[:2]
            assert s.downloads["labels"].parent == s.workdir
    folders = {s.workdir for sessions in runs for s in sessions}
    assert len(folders) == 6, "each session writes downloads to its own folder"


def test_session_close_removes_its_folder(seg, image):
    session = _loaded(seg, image)
    H.click(seg, session, SETTINGS, "points", 45, 90)
    folder = session.workdir
    assert folder.is_dir()
    H.upload(seg, session, image)  # a new upload closes the old session's folder
    assert not folder.exists()


def test_render_of_nothing_and_prompt_drawing(image):
    view = render(None)
    assert view.canvas is None and view.legend == "" and view.classes == []
    session = Session(image=image, corner=(40, 40))
    out = np.asarray(draw_prompts(Image.fromarray(image), session))
    assert tuple(out[40, 40]) == (255, 221, 0)


def test_file_stem_and_examples():
    assert file_stem("/tmp/x/My photo (1).JPG") == "My_photo_1"
    assert file_stem(None) == "image" and file_stem("...") == "image"
    examples = example_images()
    assert len(examples) == 2 and all(Image.open(p).size == (480, 360) for p in examples)


def test_build_app_wires_the_page(seg):
    gr = pytest.importorskip("gradio")
    from ovseg.app import build_app

    app = build_app(seg, models={"sam": "tiny-random", "clip": "tiny-random"})
    assert isinstance(app, gr.Blocks)
    ids = {c.elem_id for c in app.blocks.values() if getattr(c, "elem_id", None)}
    assert {
        "ovseg-input",
        "ovseg-canvas",
        "ovseg-legend",
        "ovseg-run",
        "ovseg-mode",
        "ovseg-undo",
        "ovseg-clear",
        "ovseg-confidence",
        "ovseg-dl-png",
        "ovseg-dl-json",
        "ovseg-status",
    } <= ids
    markdown = " ".join(str(c.value) for c in app.blocks.values() if isinstance(c, gr.Markdown))
    assert "SAM `tiny-random`" in markdown and f"method `{seg.method.name}`" in markdown


def test_cli_options(capsys):
    from ovseg.cli import build_parser
    from ovseg.cli._args import grid_options

    args = build_parser().parse_args(
        [
            "app",
            "--sam",
            "tiny-random",
            "--no-quality-filters",
            "--points-per-side",
            "4",
            "--port",
            "0",
        ]
    )
    options = grid_options(args)
    assert options == {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    assert args.host == "127.0.0.1" and not args.share
    assert args.func(args) == 2 and "--port" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dense_seg():
    return Segmenter("tiny-random", "tiny-random", device="cpu", templates="simple")


def test_dense_method_automatic_mode_labels_every_pixel_without_the_grid(dense_seg, image):
    session = _loaded(dense_seg, image)
    calls = dense_seg.proposer.encoder_calls
    H.run_automatic(dense_seg, session, SETTINGS)
    assert not session.warning, session.status
    assert "naclip" in session.status
    expected = dense_seg.segment(image, NAMES, templates="simple")
    np.testing.assert_array_equal(session.result.label_map, expected.label_map)
    assert (session.result.label_map >= 0).all()
    assert dense_seg.proposer.encoder_calls == calls


def test_dense_method_click_equals_the_segmenter(dense_seg, image):
    session = _loaded(dense_seg, image)
    H.click(dense_seg, session, SETTINGS, "points", 45, 90)
    assert not session.warning, session.status
    direct = dense_seg.segment(image, NAMES, points=[[45, 90]], templates="simple")
    np.testing.assert_array_equal(session.result.label_map, direct.label_map)
    assert session.result.segments[0].proposal_score > 0


def test_a_large_upload_is_segmented_downsized_and_its_label_png_mapped_back(dense_seg):
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (150, 300, 3), dtype=np.uint8)
    session = H.upload(dense_seg, None, big, name="big.png", max_side=100)
    assert session.image.shape == (50, 100, 3) and session.original_size == (150, 300)
    assert "300x150, segmented at 100x50" in session.status and not session.warning
    H.run_automatic(dense_seg, session, SETTINGS)
    assert not session.warning, session.status
    small = np.asarray(Image.fromarray(big).resize((100, 50), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(session.image, small)
    expected = dense_seg.segment(small, NAMES, templates="simple").label_map
    np.testing.assert_array_equal(session.result.label_map, expected)
    full = read_label_png(session.downloads["labels"])  # each pixel: its 3x3 block's label
    assert full.shape == (150, 300)
    np.testing.assert_array_equal(full, np.repeat(np.repeat(expected, 3, 0), 3, 1))

    fits = H.upload(dense_seg, session, big, name="big.png", max_side=300)
    assert fits.image.shape == big.shape and fits.original_size is None
