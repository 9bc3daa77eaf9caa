"""``ovseg bank build --ray`` on a real local Ray (each run starts its own and stops it, as
the CLI does) with the tiny models: the bank equals a local build's (stores bit-identical,
same manifest, masks and index neighbours) through an image that fails (the rerun resumes from
the parts written) and a worker that dies mid-run; an extension sends only the new image to
the workers; option checks need no cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.cli import main

pytest.importorskip("faiss")

TINY = [
    "--sam", "tiny-random", "--clip", "tiny-random", "--dino", "tiny-random", "--vfm",
    "tiny-random", "--short-side", "56", "--crop", "112", "--no-progress", "-n", "mine",
]  # fmt: skip


@pytest.fixture
def two_threads():
    """torch with 2 CPU threads here, 1 in a Ray worker by default: equal stores show that
    the workers take this process's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _images(folder: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        img[:20] //= 2
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
    return folder


def _files(bank: Path) -> dict[str, bytes]:
    """Every file of a bank but ovseg's record (which holds a date)."""
    return {
        p.relative_to(bank).as_posix(): p.read_bytes()
        for p in sorted(bank.rglob("*"))
        if p.is_file() and p.suffix in (".txt", ".tsv", ".npz")
    }


def _same_bank(ray_bank: Path, local: Path) -> None:
    import faiss

    assert _files(ray_bank) == _files(local)  # manifests and masks, byte for byte
    stores = sorted(p.relative_to(local) for p in local.glob("*_embeddings/*.pt"))
    assert sorted(p.relative_to(ray_bank) for p in ray_bank.glob("*_embeddings/*.pt")) == stores
    for rel in stores:
        ours, theirs = (torch.load(b / rel, weights_only=True) for b in (ray_bank, local))
        assert ours.dtype == torch.float16 and torch.equal(ours, theirs), rel  # bit-identical
    keys = torch.load(local / "vfm_embeddings/mine_dinov2-tiny.pt", weights_only=True).float()
    queries = torch.nn.functional.normalize(keys, dim=-1).numpy()
    found = []
    for bank in (ray_bank, local):
        index = faiss.read_index(str(bank / "vfm_embeddings/mine_dinov2-tiny.faiss"))
        dist, pos = index.search(queries, 4)
        found.append(pos)
    np.testing.assert_array_equal(found[0], found[1])
    rec_ray, rec_local = (
        json.loads((b / "ovseg-bank.json").read_text()) for b in (ray_bank, local)
    )
    for rec in (rec_ray, rec_local):
        for key in ("updated", "masks"):
            rec["banks"]["mine"].pop(key)
    assert rec_ray == rec_local  # models, settings, counts, every file's SHA-256
    assert not (ray_bank / "ray_parts").exists() and not list(ray_bank.rglob("*.tmp*"))


def test_ray_build_equals_the_local_build(tmp_path, monkeypatch, two_threads):
    from ovseg.bank.build import plan_build
    from ovseg.bank.models import bank_models
    from ovseg.distributed.bank import PARTS, _todo
    from ovseg.distributed.segment import FAULT_ENV

    pytest.importorskip("ray.data")
    images = _images(tmp_path / "imgs", 3)
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["bank", "build", str(images), "-o", str(local), *TINY]) == 0

    # an image that cannot be read stops the run; the parts of the others are kept
    (images / "img09.png").write_bytes(b"not a png")
    code = main(["bank", "build", str(images), "-o", str(remote), *TINY, "--ray", "--workers", "2"])
    assert code == 1
    parts = list((remote / PARTS).glob("mine-*/*.pt"))
    assert {p.stem for p in parts} <= {"img00", "img01", "img02"}
    (images / "img09.png").unlink()
    if len(parts) == 3:  # every image done before the failure: one left undone for the rerun
        parts[0].unlink()

    # the rerun resumes from the parts written; its worker exits mid-run and Ray replaces it
    marker = tmp_path / "worker-died"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    code = main(["bank", "build", str(images), "-o", str(remote), *TINY, "--ray", "--workers", "1"])
    assert code == 0 and marker.is_file()
    _same_bank(remote, local)

    # incremental: with a new image, only it is sent to the workers
    _images(images, 1, start=3)
    models = bank_models(["tiny-random"], "tiny-random", "tiny-random", None, device="cpu")
    plan = plan_build(
        images, remote, clips=models.clips, vfm=models.vfm, dino=models.dino, name="mine",
        masks_dir=None, mask_model="sam2", short_side=56, slide_crop=112,
        specs={"sam": "tiny-random", "dino": "tiny-random", "vfm": "tiny-random",
               "clips": ["tiny-random"]},
    )  # fmt: skip
    assert _todo(plan, remote / PARTS / f"mine-{plan.digest()}") == ["img03"]


def test_ray_options_are_checked_before_any_work(tmp_path, capsys):
    images = _images(tmp_path / "imgs", 1)
    out = tmp_path / "bank"
    assert main(["bank", "build", str(images), "-o", str(out), *TINY, "--workers", "2"]) == 1
    assert "--workers need --ray" in capsys.readouterr().err
    args = ["bank", "build", str(images), "-o", str(out), *TINY, "--ray", "--device", "cuda"]
    assert main(args) == 1
    assert "needs --gpus-per-worker" in capsys.readouterr().err
    assert not out.exists()


def test_ray_build_from_given_masks_refuses_missing_ones(tmp_path):
    from ovseg.distributed._ray import RayOptions
    from ovseg.distributed.bank import build_bank_ray

    pytest.importorskip("ray")
    images = _images(tmp_path / "imgs", 2)
    masks = tmp_path / "masks"
    masks.mkdir()
    np.savez_compressed(masks / "img00.npz", instance_mask=np.ones((40, 56), np.int64))
    with pytest.raises(FileNotFoundError, match="1 images have no mask"):
        build_bank_ray(images, tmp_path / "bank", clips=["tiny-random"], vfm="tiny-random",
                       dino="tiny-random", masks_dir=masks, ray_options=RayOptions(workers=1),
                       short_side=56, slide_crop=112)  # fmt: skip
    with pytest.raises(ValueError, match="exactly one of sam"):
        build_bank_ray(images, tmp_path / "bank", clips=["tiny-random"], vfm="tiny-random",
                       dino="tiny-random", sam="tiny-random", masks_dir=masks)  # fmt: skip
    shutil.rmtree(tmp_path / "bank", ignore_errors=True)
