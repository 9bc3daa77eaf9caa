import json

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main
from ovseg.result import read_label_png

TINY = ["--sam", "tiny-random", "--clip", "tiny-random", "--device", "cpu", "--no-progress"]


def test_segment_camvid_frame_writes_three_outputs(camvid_frame, tmp_path):
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
    stem = camvid_frame.stem
    labels = read_label_png(out / f"{stem}_labels.png")
    assert labels.shape == (360, 480) and labels.max() < 3
    overlay = Image.open(out / f"{stem}_overlay.png")
    assert overlay.width >= 480 and overlay.height >= 360
    coco = json.loads((out / f"{stem}.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["road; street", "sky", "car"]
    assert len(coco["annotations"]) >= 1  # the clicked object, then the rest of each class


def test_folder_with_a_bad_file_reports_it_and_writes_the_rest(tmp_path, synthetic_image, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(synthetic_image).save(src / "a.png")
    (src / "b.png").write_bytes(b"not a png")
    Image.fromarray(synthetic_image[::-1]).save(src / "c.jpg")
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(src),
            "--classes",
            "sky,road",
            "-o",
            str(out),
            "--boxes",
            "[[10, 10, 60, 60]]",
            *TINY,
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "b.png" in err and "wrote 2 of 3" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "a.json",
        "a_labels.png",
        "a_overlay.png",
        "c.json",
        "c_labels.png",
        "c_overlay.png",
    ]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    np.testing.assert_array_equal(read_label_png(out / "a_labels.png").shape, (120, 160))


@pytest.mark.parametrize(
    "args, match",
    [
        (["--classes", " , "], "empty"),
        (["--classes", "a,a"], "duplicate"),
        (["--classes", "a", "--points", "[[1, 2"], "JSON"),
    ],
)
def test_bad_arguments_exit_2_with_message(args, match, tmp_path, synthetic_image, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(synthetic_image).save(img)
    rc = main(["segment", str(img), "-o", str(tmp_path / "o"), *args, *TINY])
    assert rc == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_empty_folder_is_an_error(tmp_path, capsys):
    rc = main(["segment", str(tmp_path), "--classes", "a", "-o", str(tmp_path / "o"), *TINY])
    assert rc == 2 and "no images" in capsys.readouterr().err
