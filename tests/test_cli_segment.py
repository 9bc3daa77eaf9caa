"""``ovseg segment``: outputs that cannot collide, one COCO file per run, resume, exports, and
the checks that run once before any model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import ovseg.pipeline
from ovseg.cli import main
from ovseg.result import Segment, SegmentationResult, read_label_png

TINY = ["--sam", "tiny-random", "--clip", "tiny-random", "--device", "cpu", "--no-progress"]
FAST = ["--no-progress"]  # with FakeSegmenter: no model at all


class FakeSegmenter:
    """Stands in for the Segmenter where the models do not matter: the top half of each image
    is one segment of class 0, the rest class 1 (unsegmented; unlabeled with one class)."""

    built: list[dict] = []
    calls: list[dict] = []
    interrupt_at: int | None = None

    def __init__(self, *args, **kwargs):
        FakeSegmenter.built.append({"args": args, **kwargs})

    def segment(self, image, classes, **kwargs):
        from ovseg.image import load_image

        FakeSegmenter.calls.append({"image": image, "classes": classes, **kwargs})
        if FakeSegmenter.interrupt_at == len(FakeSegmenter.calls):
            raise KeyboardInterrupt
        array = load_image(image)
        h, w = array.shape[:2]
        mask = np.zeros((h, w), bool)
        mask[: h // 2] = True
        labels = np.where(mask, 0, 1 if len(classes) > 1 else -1).astype(np.int32)
        segment = Segment(1, mask, 0, 0.75, (0, 0, w, h // 2), int(mask.sum()), 0.5)
        conf = np.full((h, w), 0.5, np.float32)
        return SegmentationResult(labels, conf, classes, [segment], image=array)


@pytest.fixture
def fake(monkeypatch):
    FakeSegmenter.built, FakeSegmenter.calls, FakeSegmenter.interrupt_at = [], [], None
    monkeypatch.setattr(ovseg.pipeline, "Segmenter", FakeSegmenter)
    return FakeSegmenter


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no model may load")

    monkeypatch.setattr(ovseg.pipeline, "Segmenter", refuse)


def _save(path, seed=0, shape=(40, 60)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def colliding(tmp_path):
    """The issue's folder: four images whose stems collide."""
    root = tmp_path / "in"
    for i, name in enumerate(["a/x.jpg", "a/x.png", "a/x_2.jpg", "b/x.jpg"]):
        _save(root / name, seed=i, shape=(40 + i, 60))
    return root


OUTPUTS = ("_labels.png", "_overlay.png", ".json")


def test_colliding_names_each_keep_their_outputs_and_one_coco_file(fake, colliding, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    assert main(["segment", str(colliding), "--classes", "road", "sky", "-o", str(out)]) == 0
    names = ["a/x.jpg", "a/x.png", "a/x_2.jpg", "b/x.jpg"]
    for i, name in enumerate(names):
        for suffix in OUTPUTS:
            assert (out / (name + suffix)).is_file(), name + suffix
        # each image's own outputs: its own size (no image's outputs overwrote another's)
        assert read_label_png(out / f"{name}_labels.png").shape == (40 + i, 60)
        per_image = json.loads((out / f"{name}.json").read_text())
        assert per_image["images"][0]["file_name"] == name
    coco = COCO(str(out / "instances.json"))
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == names
    assert [coco.imgs[i]["height"] for i in sorted(coco.imgs)] == [40, 41, 42, 43]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["road", "sky"]
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[2]))[0]
    assert coco.annToMask(ann).shape == (41, 60) and ann["category_id"] == 1
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_separate_arguments_keep_their_folders(fake, colliding, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(colliding / "a" / "x.jpg"), str(colliding / "b" / "x.jpg")]
    assert main(["segment", *args, "--classes", "road", "-o", str(out), *FAST]) == 0
    assert (out / "a" / "x.jpg_labels.png").is_file() and (out / "b" / "x.jpg.json").is_file()
    record = json.loads((out / "ovseg_run.json").read_text())
    assert record["images"] == ["a/x.jpg", "b/x.jpg"]
    assert record["settings"]["root"] == str(colliding)
    assert "wrote 2 of 2" in capsys.readouterr().err


def test_same_command_resumes_without_loading_models(fake, colliding, tmp_path, capsys):
    out = tmp_path / "out"
    command = ["segment", str(colliding), "--classes", "road, sky", "-o", str(out), *FAST]
    fake.interrupt_at = 3  # Ctrl-C on the third image
    assert main(command) == 130
    err = capsys.readouterr().err
    assert "interrupted: wrote 2 of 4 image(s)" in err and "resume" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    coco = json.loads((out / "instances.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a/x.jpg", "a/x.png"]
    fake.interrupt_at = None
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "resuming: 2 of 4" in err and "wrote 2 of 4 image(s)" in err
    assert [c["image"].name for c in fake.calls[-2:]] == ["x_2.jpg", "x.jpg"]
    coco = json.loads((out / "instances.json").read_text())
    assert len(coco["images"]) == 4 and len(coco["annotations"]) == 4
    built = len(fake.built)
    assert main(command) == 0  # all done: nothing to segment, no model built
    assert len(fake.built) == built and "wrote 0 of 4" in capsys.readouterr().err


def test_other_settings_or_unknown_outputs_are_refused(fake, colliding, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(colliding), "--classes", "road", "-o", str(out), *FAST]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main(["segment", str(colliding), "--classes", "car", "-o", str(out), *FAST])
    assert code == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "classes" in err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "x.jpg_labels.png").write_bytes(b"someone else's")
    one = str(colliding / "a" / "x.jpg")
    assert main(["segment", one, "--classes", "road", "-o", str(stray), *FAST]) == 2
    assert "x.jpg_labels.png exists" in capsys.readouterr().err
    assert (stray / "x.jpg_labels.png").read_bytes() == b"someone else's"


def test_exports_read_back_and_stem_clashes_are_refused_before_work(
    fake, colliding, tmp_path, capsys
):
    import supervision as sv

    out = tmp_path / "out"
    code = main(
        ["segment", str(colliding), "--classes", "road", "-o", str(out), "--format", "yolo"]
    )
    assert code == 2 and not fake.built and not out.exists()
    assert "a/x.png" in capsys.readouterr().err
    src = colliding / "b"
    fmt = ["--format", "yolo,coco-panoptic"]
    assert main(["segment", str(src), "--classes", "road", "sky", "-o", str(out), *fmt]) == 0
    panoptic = json.loads((out / "panoptic.json").read_text())
    assert [i["file_name"] for i in panoptic["images"]] == ["x.jpg"]
    assert (out / "panoptic" / "x.png").is_file()
    dataset = sv.DetectionDataset.from_yolo(
        images_directory_path=str(src),
        annotations_directory_path=str(out / "yolo" / "labels"),
        data_yaml_path=str(out / "yolo" / "data.yaml"),
        force_masks=True,
    )
    _, _, detections = dataset[0]
    assert dataset.classes == ["road", "sky"] and len(detections) == 1
    assert detections.mask[0].sum() == pytest.approx(43 * 60 / 2, rel=0.1)


@pytest.mark.parametrize(
    "argv",
    [
        ["--classes", "road", "car", "-o", "OUT", "IMG"],
        ["IMG", "--classes", "road", "car", "-o", "OUT"],
        ["--classes", "road", "--classes", "car", "-o", "OUT", "IMG"],
        ["--classes", "road, car", "-o", "OUT", "--", "IMG"],
    ],
)
def test_classes_tokens_and_option_order(fake, tmp_path, argv):
    img = str(_save(tmp_path / "img.jpg"))
    argv = [{"OUT": str(tmp_path / "out"), "IMG": img}.get(a, a) for a in argv]
    assert main(["segment", *FAST, *argv]) == 0
    assert fake.calls[0]["classes"] == ["road", "car"]


def test_synonyms_background_and_intermixed_images(fake, tmp_path):
    a, b = _save(tmp_path / "a.jpg"), _save(tmp_path / "b.jpg", 1)
    out = tmp_path / "out"
    argv = [str(a), "--classes", "road; street, red truck", "sky", "-o", str(out), str(b)]
    assert main(["segment", *argv, "--background", "tree", *FAST]) == 0
    assert fake.calls[0]["classes"] == ["road; street", "red truck", "sky"]
    assert fake.calls[0]["background"] == ["tree"]
    assert sorted(c["image"].name for c in fake.calls) == ["a.jpg", "b.jpg"]


def test_images_read_as_class_names_get_a_clear_message(no_models, tmp_path, capsys):
    img = str(_save(tmp_path / "img.jpg"))
    code = main(["segment", "--classes", "road", img, "-o", str(tmp_path / "o"), *FAST])
    assert code == 2
    assert "was read as a class name" in capsys.readouterr().err


def test_grid_flags_reach_the_segmenter(fake, tmp_path):
    img = str(_save(tmp_path / "img.jpg"))
    grid = ["--points-per-side", "4", "--no-quality-filters", "--box-nms-thresh", "0.5"]
    argv = ["segment", img, "--classes", "a", "-o", str(tmp_path / "o"), *grid]
    assert main([*argv, "--method", "sam-clip", *FAST]) == 0
    built = fake.built[0]  # the Segmenter is built with the grid options (one way: keywords)
    assert (built["points_per_side"], built["pred_iou_thresh"], built["box_nms_thresh"]) == (
        4,
        0.0,
        0.5,
    )
    assert built["stability_score_thresh"] == 0.0 and built["method"] == "sam-clip"


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--classes", " , "], "empty"),
        (["--classes", "a,a"], "duplicate"),
        (["--classes", "a", "--templates", "bogus"], "template"),
        (["--classes", "a", "--points", "[[1, 2"], "JSON"),
        (["--classes", "a", "--point-labels", "[1]"], "without points"),
        (["--classes", "a", "--boxes", "[[1, 2, 3]]"], "boxes"),
        (["--classes", "a", "--boxes", "[[5, 5, 20, 20]]", "--points-per-side", "8"], "grid"),
        (["--classes", "a", "--pred-iou-thresh", "0"], "--method sam-clip"),
        (["--classes", "a", "--pred-iou-thresh", "2", "--method", "sam-clip"], "pred_iou"),
        (["--classes", "a", "--score-threshold", "1.5"], "score-threshold"),
        (["--classes", "a", "--background", "a"], "background"),
        (["--classes", "a", "--method", "bogus"], "--method must be one of"),
        (["--classes", "a", "--method", "proxyclip"], "needs --dino"),
        (["--classes", ",".join(f"c{i}" for i in range(256))], "at most 255 classes"),
        (["--classes", ",".join(f"c{i}" for i in range(256)), "--ray"], "at most 255 classes"),
    ],
)
def test_image_independent_errors_once_before_models_load(
    extra, match, no_models, tmp_path, capsys
):
    for i in range(3):
        _save(tmp_path / "in" / f"{i}.png", i)
    out = tmp_path / "o"
    code = main(["segment", str(tmp_path / "in"), "-o", str(out), *extra, *FAST])
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("error") == 1, err
    assert not out.exists()


def test_out_naming_a_file_and_missing_cuda_fail_before_models_load(
    no_models, tmp_path, capsys, monkeypatch
):
    import torch

    img = str(_save(tmp_path / "img.jpg"))
    afile = tmp_path / "taken.txt"
    afile.write_text("x")
    assert main(["segment", img, "--classes", "a", "-o", str(afile), *FAST]) == 2
    assert "is a file" in capsys.readouterr().err and afile.read_text() == "x"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["segment", img, "--classes", "a", "-o", str(tmp_path / "o"), "--device", "cuda"]
    assert main([*argv, *FAST]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err


def test_camvid_frame_with_a_click_writes_every_output(camvid_frame, tmp_path):
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(camvid_frame),
            "--classes",
            "road; street, sky, car",
            "-o",
            str(out),
            "--points",
            "[[240, 300]]",
            *TINY,
        ]
    )
    assert rc == 0
    name = camvid_frame.name
    labels = read_label_png(out / f"{name}_labels.png")
    assert labels.shape == (360, 480) and labels.max() < 3
    overlay = Image.open(out / f"{name}_overlay.png")
    assert overlay.width >= 480 and overlay.height >= 360
    coco = json.loads((out / f"{name}.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["road; street", "sky", "car"]
    assert coco["images"][0]["file_name"] == name
    assert len(coco["annotations"]) >= 1


def test_folder_with_a_bad_file_reports_it_and_writes_the_rest(tmp_path, synthetic_image, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(synthetic_image).save(src / "a.png")
    (src / "b.png").write_bytes(b"not a png")
    Image.fromarray(synthetic_image[::-1]).save(src / "c.jpg")
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--classes", "sky,road", "-o", str(out), *TINY])
    assert rc == 1
    err = capsys.readouterr().err
    assert "b.png" in err and "wrote 2 of 3" in err and "1 failed" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "a.png.json",
        "a.png_labels.png",
        "a.png_overlay.png",
        "c.jpg.json",
        "c.jpg_labels.png",
        "c.jpg_overlay.png",
        "instances.json",
        "ovseg_run.json",
    ]
    coco = json.loads((out / "instances.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "c.jpg"]
    np.testing.assert_array_equal(read_label_png(out / "a.png_labels.png").shape, (120, 160))


def test_empty_folder_is_an_error(no_models, tmp_path, capsys):
    rc = main(["segment", str(tmp_path), "--classes", "a", "-o", str(tmp_path / "o"), *FAST])
    assert rc == 2 and "no images" in capsys.readouterr().err


def test_output_folder_inside_the_input_folder_is_not_read_back(fake, tmp_path):
    src = tmp_path / "in"
    _save(src / "a.jpg")
    out = src / "out"
    assert main(["segment", str(src), "--classes", "a", "-o", str(out), *FAST]) == 0
    assert main(["segment", str(src), "--classes", "a", "-o", str(out), *FAST]) == 0
    assert [c["image"].name for c in fake.calls] == ["a.jpg"]


def test_refine_masks_flag(camvid_frame, tmp_path, capsys):
    out = tmp_path / "refined"
    args = ["segment", str(camvid_frame), "--classes", "road", "sky", "-o", str(out), *TINY]
    assert main([*args, "--refine", "masks", "--points-per-side", "4"]) == 0
    coco = json.loads((out / "instances.json").read_text())
    assert coco["annotations"]
    assert main([*args, "--points-per-side", "4"]) != 0  # grid flags without SAM's grid
    assert "--refine masks" in capsys.readouterr().err
    other = tmp_path / "other"
    bad = ["segment", str(camvid_frame), "--classes", "road", "-o", str(other), *TINY]
    assert main([*bad, "--refine", "masks", "--method", "sam-clip"]) == 0  # sam-clip's default


def test_output_names_that_would_leave_out_are_refused_per_image(fake, tmp_path, capsys):
    """Names are checked before anything is written: one whose outputs would leave OUT fails
    alone (said once), the other image gets its outputs and the run files."""
    from ovseg.cli import build_parser, segment
    from ovseg.cli._outputs import InputImage, name_problem, save_outputs
    from ovseg.cli._plan import prepare

    for bad in ["../x.png", "a/../../x.png", "/etc/x.png", "a//b.png", "./a.png", "..\\x.png",
                "a\x00.png", "a\n.png", ""]:  # fmt: skip
        assert name_problem(bad), bad
    for good in ["a.png", "sub/c.png", ".hidden/x.png", "x..y.png", "a b/c.png"]:
        assert name_problem(good) is None, good
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(image)
    out = tmp_path / "runs" / "out"
    argv = ["segment", str(image), "--classes", "road", "car", "-o", str(out), *FAST]
    args = build_parser().parse_args(argv)

    def collect(inputs, out):
        return tmp_path, [InputImage(image, "a.png"), InputImage(image, "../../escape.png")]

    before = set(tmp_path.rglob("*"))
    assert segment._Run(args, *prepare(args, collect)).run() == 1
    assert "skipped" in capsys.readouterr().err
    assert {p for p in tmp_path.rglob("*") if out not in p.parents} == before | {out.parent, out}
    coco = json.loads((out / "instances.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png"]
    assert len(fake.calls) == 1  # the refused image was never segmented
    result = fake().segment(image, ["road", "car"])
    with pytest.raises(ValueError, match="refused"):
        save_outputs(result, out, "../y.png")
    assert not (out.parent / "y.png_labels.png").exists()
