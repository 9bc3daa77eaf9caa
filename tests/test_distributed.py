"""ovseg.distributed on a real local Ray cluster (one per module, 2 CPUs) with the tiny models:
the Ray run's outputs equal the local run's byte for byte, a corrupt file is a failed row of
the manifest, a worker that exits mid-run is replaced and the run completes, and a rerun
writes nothing. Inputs (globs, lists, file:// URIs) and option checks need no cluster."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main
from ovseg.distributed.inputs import list_inputs, read_image

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid-val"
TINY = {"sam": "tiny-random", "clip": "tiny-random"}
CLASSES = ["road", "car", "sky"]


def _images(folder: Path) -> Path:
    """Three small CamVid frames (synthetic images where the data is absent), one in a
    subfolder, and a truncated PNG."""
    folder.mkdir()
    (folder / "sub").mkdir()
    names = ["a.png", "b.png", "sub/c.png"]
    frames = sorted((CAMVID / "images").glob("*.png"))[:3] if CAMVID.is_dir() else []
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        if frames:
            image = Image.open(frames[i]).convert("RGB").resize((240, 180), Image.BILINEAR)
        else:
            image = Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8))
        image.save(folder / name)
    data = (folder / "a.png").read_bytes()
    (folder / "corrupt.png").write_bytes(data[: len(data) // 3])
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture
def two_threads():
    """torch with 2 CPU threads here, while Ray starts each worker with 1 (its one CPU): CPU
    sums differ in their last bits between 1 and 2 threads, so equal outputs show that the
    workers take this process's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_ray_run_equals_local_run_survives_a_dead_worker_and_resumes(
    cluster, tmp_path, monkeypatch, two_threads
):
    from ovseg import __version__
    from ovseg.distributed import segment_dataset
    from ovseg.distributed.segment import FAULT_ENV, JOURNAL, MANIFEST

    images = _images(tmp_path / "images")
    local, remote = tmp_path / "local", tmp_path / "ray"
    tiny = ["--sam", "tiny-random", "--clip", "tiny-random", "--no-progress"]
    assert main(["segment", str(images), "--classes", *CLASSES, "-o", str(local), *tiny]) == 1
    marker = tmp_path / "worker-died"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    args = ["segment", str(images), "--classes", *CLASSES, "-o", str(remote), *tiny, "--ray"]
    assert main([*args, "--workers", "2"]) == 1  # 1: the corrupt file
    assert marker.is_file()  # a worker did exit mid-batch; Ray replaced it

    ours, theirs = _files(remote), _files(local)
    assert ours.pop(MANIFEST)
    assert ours == theirs  # label PNGs, overlays, COCO JSON, instances.json, ovseg_run.json
    assert "sub/c.png_labels.png" in ours
    rows = [json.loads(line) for line in (remote / MANIFEST).read_text().splitlines()]
    assert [r["image"] for r in rows] == ["a.png", "b.png", "corrupt.png", "sub/c.png"]
    assert json.loads((remote / "a.png.json").read_text())["ovseg"]["version"] == __version__
    assert not (remote / JOURNAL).exists()  # folded into the manifest
    bad = rows[2]
    assert bad["status"] == "failed" and "truncated" in bad["error"] and bad["classes"] == []
    for row in rows[:2] + rows[3:]:
        assert row["status"] == "ok" and row["error"] is None
        assert set(row["seconds"]) == {"read", "segment", "write"}
        labels = np.asarray(Image.open(remote / (row["image"] + "_labels.png")))
        assert row["classes"] == [CLASSES[i] for i in np.unique(labels) if i != 255]

    # a rerun writes nothing: the good images are skipped, the corrupt one fails again
    before = {p: p.stat().st_mtime_ns for p in remote.rglob("*")}
    time.sleep(0.05)
    summary = segment_dataset(images, CLASSES, remote, workers=2, **TINY)
    assert summary["images"] == 4 and summary["written"] == 0 and summary["skipped"] == 3
    assert [f["image"] for f in summary["failed"]] == ["corrupt.png"]
    assert {p: p.stat().st_mtime_ns for p in remote.rglob("*")} == before
    assert _files(remote) == {**theirs, MANIFEST: (remote / MANIFEST).read_bytes()}

    # outputs without manifest rows (e.g. from a local run) are listed as done; nothing to
    # segment, so no worker starts
    (remote / MANIFEST).unlink()
    good = [str(images / n) for n in ("a.png", "b.png", "sub/c.png")]
    summary = segment_dataset(good, CLASSES, remote, **TINY)
    assert summary["written"] == 0 and summary["skipped"] == 3 and not summary["failed"]
    again = [json.loads(line) for line in (remote / MANIFEST).read_text().splitlines()]
    assert [r["status"] for r in again] == ["done"] * 3
    assert [r["worker"] for r in again] == ["local run"] * 3
    assert [r["classes"] for r in again] == [rows[0]["classes"], rows[1]["classes"],
                                             rows[3]["classes"]]  # fmt: skip


def test_inputs_glob_list_and_file_uris(tmp_path):
    images = _images(tmp_path / "images")
    out = tmp_path / "out"
    root, folder = list_inputs([str(images)], out)
    names = ["a.png", "b.png", "corrupt.png", "sub/c.png"]
    assert [i.name for i in folder] == names and root == str(images)
    _, globbed = list_inputs([str(images / "**" / "*.png")], out)
    assert [i.name for i in globbed] == names
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nimages/a.png\n\n" + str(images / "sub" / "c.png") + "\n")
    root, listed = list_inputs([str(listing)], out)
    assert [i.name for i in listed] == ["a.png", "sub/c.png"] and root == str(images)
    uri_root, uris = list_inputs([images.as_uri()], out)
    assert [i.name for i in uris] == names and uri_root == images.as_uri()
    assert np.array_equal(read_image(uris[0].path), read_image(images / "a.png"))
    with pytest.raises(ValueError, match="truncated"):
        read_image(uris[2].path)
    with pytest.raises(FileNotFoundError, match="no images match"):
        list_inputs([str(tmp_path / "*.jpg")], out)
    with pytest.raises(FileNotFoundError, match="not found"):
        list_inputs([images.as_uri() + "/missing.png"], out)
    with pytest.raises(ValueError, match="mix"):
        list_inputs([str(images / "a.png"), images.as_uri()], out)


def test_bad_options_fail_before_ray_starts(tmp_path, capsys):
    from ovseg.distributed import segment_dataset

    images = _images(tmp_path / "images")
    with pytest.raises(ValueError, match="unknown option.*colour"):
        segment_dataset(images, CLASSES, tmp_path / "out", colour="red", **TINY)
    with pytest.raises(ValueError, match="workers"):
        segment_dataset(images, CLASSES, tmp_path / "out", workers=0, **TINY)
    with pytest.raises(ValueError, match="format"):
        segment_dataset(images, CLASSES, tmp_path / "out", formats=["png"], **TINY)
    with pytest.raises(ValueError, match="needs --gpus-per-worker"):
        segment_dataset(images, CLASSES, tmp_path / "out", device="cuda", **TINY)
    code = main(["segment", str(images), "--classes", "road", "-o", str(tmp_path / "o"),
                 "--workers", "2"])  # fmt: skip
    assert code == 2 and "--workers need --ray" in capsys.readouterr().err
    code = main(["eval", "--data", str(images), "--out", str(tmp_path / "r.json"), "--ray",
                 "--device", "cuda:1", "--gpus-per-worker", "1"])  # fmt: skip
    assert code == 1 and "each worker sees only its own GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
    assert os.environ.get("RAY_ADDRESS") is None


def test_eval_ray_sums_the_local_confusion_matrix(cluster, tmp_path):
    images = _images(tmp_path / "frames")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    (data / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        source = images / ("sub/c.png" if name == "c" else f"{name}.png")
        shutil.copy(source, data / "images" / f"{name}.png")
        label = rng.integers(0, 3, (180, 240), dtype=np.uint8)
        label[:20] = 255  # ignored
        Image.fromarray(label).save(data / "labels" / f"{name}.png")
    tiny = ["--sam", "tiny-random", "--clip", "tiny-random", "--no-progress"]
    local, remote = tmp_path / "local.json", tmp_path / "ray" / "report.json"
    assert main(["eval", "--data", str(data), "--out", str(local), *tiny]) == 0
    args = ["eval", "--data", str(data), "--out", str(remote), *tiny, "--ray", "--workers", "2"]
    assert main(args) == 0
    ours, theirs = json.loads(remote.read_text()), json.loads(local.read_text())
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    assert ours["miou"] == theirs["miou"] and ours["config"] == theirs["config"]
    assert ours["counts"]["computed"] == 3 and ours["counts"]["pixels"] == 3 * 160 * 240
    assert sorted(p.name for p in Path(ours["cache"]).glob("*.png")) == ["a.png", "b.png", "c.png"]


def test_failed_run_on_a_joined_cluster_frees_its_workers(cluster, tmp_path):
    """A run that fails in its workers (a label value outside the classes) on a cluster the
    caller started and keeps: the error names the worker's exception, and the workers' CPUs
    are free again at once, without Python's garbage collector (the failure's traceback kept
    Ray Data's actors alive, and their CPUs held, until it ran)."""
    import gc

    from ovseg.distributed import evaluate_dataset

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    (data / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for name in ("a", "b"):
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(data / "images" / f"{name}.png")
        Image.fromarray(np.full((16, 24), 7, np.uint8)).save(data / "labels" / f"{name}.png")
    total = cluster.cluster_resources()["CPU"]
    gc.disable()
    try:
        with pytest.raises(RuntimeError, match=r"ValueError: label .* values \[7\] outside"):
            evaluate_dataset(data, tmp_path / "r.json", workers=2, **TINY)
        deadline = time.monotonic() + 30
        while cluster.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cluster.available_resources().get("CPU", 0) == total
    finally:
        gc.enable()
    assert cluster.is_initialized()  # the caller's session is left running


def test_ray_input_whose_name_leaves_out_is_refused_alone(cluster, tmp_path):
    """A list entry ``file:///.../deep/../../x.png`` would name its outputs ``../../x.png``:
    it is a failed manifest row, nothing is written outside ``-o``, the good image completes
    with its run files and manifest."""
    from ovseg.distributed import segment_dataset
    from ovseg.distributed.segment import MANIFEST

    root = tmp_path / "w"
    deep = root / "data" / "deep"
    deep.mkdir(parents=True)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), np.uint8))
    image.save(deep / "good.png")
    image.save(root / "x.png")
    listing = root / "list.txt"
    listing.write_text(f"{(deep / 'good.png').as_uri()}\n{deep.as_uri()}/../../x.png\n")
    out = root / "runs" / "out"  # OUT/../../x.png_labels.png would land in root
    before = {p for p in root.rglob("*")}

    summary = segment_dataset([str(listing)], CLASSES, out, workers=1, **TINY)

    assert {p for p in root.rglob("*") if out not in p.parents} == before | {out.parent, out}
    assert summary["written"] == 1 and [f["image"] for f in summary["failed"]] == ["../../x.png"]
    assert "refused" in summary["failed"][0]["error"] and "'..'" in summary["failed"][0]["error"]
    rows = {r["image"]: r for r in map(json.loads, (out / MANIFEST).read_text().splitlines())}
    assert rows["good.png"]["status"] == "ok" and rows["../../x.png"]["status"] == "failed"
    assert rows["../../x.png"]["worker"]  # the driver that refused it
    coco = json.loads((out / "instances.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["good.png"]
    assert json.loads((out / "ovseg_run.json").read_text())["images"] == ["good.png"]


def test_interrupted_ray_run_counts_and_lists_what_is_on_disk(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the workers keep writing: the driver received one row, three images are
    on disk. The summary says three, the manifest lists three ``ok`` rows with their worker
    (from the workers' journal), instances.json covers three. No Ray cluster: the workers'
    side runs here, as a Ray worker runs it."""
    pytest.importorskip("ray")
    import socket

    from ovseg.distributed import segment as dseg

    images = _images(tmp_path / "images")
    (images / "corrupt.png").unlink()
    out = tmp_path / "out"

    def interrupted(out, settings, todo, ray_options, device, progress, summary):
        worker = dseg.SegmentWorker(settings, str(out), device)
        raws = [worker({"uri": [str(i.path)], "name": [i.name]}) for i in todo]
        summary["interrupted"] = True  # Ctrl-C after the first row reached the driver
        first = {k: v[0] for k, v in raws[0].items()}
        return {first["image"]: dseg._row(first)}

    monkeypatch.setattr(dseg, "_stream", interrupted)
    tiny = ["--sam", "tiny-random", "--clip", "tiny-random", "--no-progress"]
    code = main(["segment", str(images), "--classes", *CLASSES, "-o", str(out), *tiny, "--ray"])
    err = capsys.readouterr().err
    assert code == 130 and "wrote 3 of 3 image(s)" in err and "interrupted" in err
    rows = [json.loads(line) for line in (out / dseg.MANIFEST).read_text().splitlines()]
    here = f"{socket.gethostname()}:{os.getpid()}"
    assert [(r["image"], r["status"], r["worker"]) for r in rows] == [
        ("a.png", "ok", here), ("b.png", "ok", here), ("sub/c.png", "ok", here)
    ]  # fmt: skip
    assert len(json.loads((out / "instances.json").read_text())["images"]) == 3
    assert not (out / dseg.JOURNAL).exists()

    # a driver that died before writing any manifest: the journal still names the workers
    journal = {r["image"]: r for r in rows}
    (out / dseg.MANIFEST).unlink()
    (out / dseg.JOURNAL).mkdir()
    lines = "".join(json.dumps(r) + "\n" for r in journal.values()) + '{"image": "cut sh'
    (out / dseg.JOURNAL / "host-1.jsonl").write_text(lines)
    summary = dseg.segment_dataset(images, CLASSES, out, **TINY)
    assert summary["written"] == 0 and summary["skipped"] == 3
    again = [json.loads(line) for line in (out / dseg.MANIFEST).read_text().splitlines()]
    assert again == rows and not (out / dseg.JOURNAL).exists()
