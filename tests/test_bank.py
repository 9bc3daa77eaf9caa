"""Memory banks: the layout and record of a build, resume, incremental extension, the index,
refusal of other models, `ovseg bank build | info`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from corrclipv2_models import tiny_clip_backend
from PIL import Image

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def models():
    from ovseg.methods.dino import tiny_dino
    from ovseg.methods.vfm import tiny_dinov2_vfm

    return SimpleNamespace(
        clips={"main": tiny_clip_backend(1, "main", 32), "aux": tiny_clip_backend(2, "aux", 24)},
        dino=tiny_dino(patch_size=8, seed=1),
        vfm=tiny_dinov2_vfm(seed=3, dim=32, name="vfm"),
    )


def _images(folder: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        img[:20] //= 2
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
    return folder


def _mask_fn(image):
    h, w = image.shape[:2]
    ids = (np.arange(h)[:, None] // 10) * 10 + np.arange(w)[None] // 14 + 1
    ids[image[..., 0] < 20] = 0
    return ids


def _build(models, images, out, **kw):
    from ovseg.bank import build_bank

    return build_bank(
        images, out, clips=models.clips, vfm=models.vfm, dino=models.dino, name="mine",
        mask_fn=_mask_fn, progress=False, short_side=56, slide_crop=112, **kw,
    )  # fmt: skip


def _stores(out: Path) -> dict:
    return {
        p.relative_to(out).as_posix(): torch.load(p, weights_only=True)
        for p in sorted(out.glob("*_embeddings/*.pt"))
    }


def test_build_layout_record_open_and_info(models, tmp_path):
    from ovseg.bank import bank_info
    from ovseg.bank.build import file_sha256
    from ovseg.bank.info import format_info
    from ovseg.methods.bank import MemoryBank

    out = tmp_path / "bank"
    record = _build(models, _images(tmp_path / "imgs", 3), out)
    n = record["regions"]
    expected = 0
    for p in sorted((tmp_path / "imgs").iterdir()):
        ids = np.unique(_mask_fn(np.array(Image.open(p))))
        expected += int((ids != 0).sum())
    assert record["images"] == 3 and n == expected > 0
    for rel in ("clip_embeddings/mine_main.pt", "clip_embeddings/mine_aux.pt",
                "vfm_embeddings/mine_vfm.pt", "vfm_embeddings/mine_vfm.faiss",
                "manifests/mine.manifest.txt", "manifests/mine.images.tsv"):  # fmt: skip
        assert (out / rel).is_file(), rel
        assert record["files"][rel]["sha256"] == file_sha256(out / rel)
    assert sorted(p.name for p in (out / "masks" / "mine" / "sam2").iterdir()) == [
        "img00.npz", "img01.npz", "img02.npz",
    ]  # fmt: skip
    stores = _stores(out)
    assert stores["clip_embeddings/mine_main.pt"].shape == (n, 32)
    assert stores["clip_embeddings/mine_aux.pt"].shape == (n, 24)
    assert all(s.dtype == torch.float16 for s in stores.values())
    norms = stores["clip_embeddings/mine_main.pt"].float().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(n), atol=2e-3, rtol=0)  # unit-norm CLIP rows
    lines = (out / "manifests/mine.manifest.txt").read_text().splitlines()
    assert len(lines) == n and lines[0] == "img00#0"
    stem, start, count = (out / "manifests/mine.images.tsv").read_text().splitlines()[1].split()
    assert stem == "img01" and int(start) == lines.index("img01#0")
    assert not list(out.rglob("*.npy")) and not list(out.rglob("*.tmp*"))  # no leftovers

    bank = MemoryBank.open(out, vfm="vfm", clips=["main", "aux"])
    assert bank.name == "mine" and len(bank) == n and bank.dim == 32
    keys = torch.nn.functional.normalize(stores["vfm_embeddings/mine_vfm.pt"].float(), dim=-1)
    _, rows = bank.search(keys[:5], 3)
    assert rows.shape == (5, 3) and (rows[:, 0] == np.arange(5)).all()  # a key finds itself
    info = bank_info(out, verify=True)
    assert info["banks"]["mine"]["verified"] is True
    text = format_info(info)
    assert "3 images" in text and "index vfm: IndexFlatIP" in text and "match their hashes" in text
    (out / "manifests/mine.images.tsv").write_text("tampered\t0\t1\n")
    assert bank_info(out, verify=True)["banks"]["mine"]["verified"] == ["manifests/mine.images.tsv"]


def test_resume_and_incremental_extension(models, tmp_path, monkeypatch):
    import ovseg.bank.build as build_mod

    clean = tmp_path / "clean"
    _build(models, _images(tmp_path / "all", 3), clean)

    # interrupted after the first image's VFM keys, then resumed
    images = _images(tmp_path / "imgs", 3)
    out = tmp_path / "bank"
    real, calls = build_mod.vfm_region_features, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(build_mod, "vfm_region_features", flaky)
    with pytest.raises(KeyboardInterrupt):
        _build(models, images, out)
    assert list(out.glob("vfm_embeddings/*.f16.npy"))  # the rows written so far are kept
    monkeypatch.setattr(build_mod, "vfm_region_features", real)
    _build(models, images, out)
    for rel, data in _stores(clean).items():
        assert torch.equal(_stores(out)[rel], data), rel

    # incremental: two images first, the third added later; old ids and rows unchanged
    inc = tmp_path / "inc"
    part = _images(tmp_path / "part", 2)
    _build(models, part, inc)
    before_lines = (inc / "manifests/mine.manifest.txt").read_text().splitlines()
    before = _stores(inc)
    _images(part, 1, start=2)
    record = _build(models, part, inc)
    after = _stores(inc)
    lines = (inc / "manifests/mine.manifest.txt").read_text().splitlines()
    assert lines[: len(before_lines)] == before_lines and len(lines) == record["regions"]
    for rel, data in before.items():
        assert torch.equal(after[rel][: len(data)], data), rel
        assert torch.equal(after[rel], _stores(clean)[rel]), rel  # same as building at once
    import faiss

    index = faiss.read_index(str(inc / "vfm_embeddings/mine_vfm.faiss"))
    assert index.ntotal == len(lines)
    assert sorted(faiss.vector_to_array(index.id_map)) == list(range(len(lines)))


def test_ivfpq_index_as_the_reference(tmp_path):
    import faiss

    from ovseg.bank.store import update_index
    from ovseg.methods.bank import MemoryBank

    g = torch.Generator().manual_seed(0)
    n = 400
    keys = torch.randn(n, 64, generator=g)
    root = tmp_path / "b"
    (root / "clip_embeddings").mkdir(parents=True)
    (root / "vfm_embeddings").mkdir()
    torch.save(keys.half(), root / "vfm_embeddings" / "x_v.pt")
    torch.save(torch.randn(n, 8, generator=g).half(), root / "clip_embeddings" / "x_c.pt")
    assert update_index(root / "vfm_embeddings/x_v.pt", root / "vfm_embeddings/x_v.faiss") == n
    index = faiss.read_index(str(root / "vfm_embeddings/x_v.faiss"))
    inner = faiss.downcast_index(index.index)
    assert type(index).__name__ == "IndexIDMap2" and type(inner).__name__ == "IndexIVFPQ"
    assert inner.nlist == int(8 * np.sqrt(n)) and inner.pq.M == 32 and inner.pq.nbits == 8
    assert inner.metric_type == faiss.METRIC_L2  # faiss's default, as the reference's builder
    bank = MemoryBank.open(root, vfm="v", clips=["c"])
    assert faiss.downcast_index(bank.index.index).nprobe == min(256, inner.nlist)
    q = torch.nn.functional.normalize(keys.float(), dim=-1)[:20]
    _, rows = bank.search(q, 5)
    assert (rows[:, 0] == np.arange(20)).mean() > 0.9  # PQ: nearly always itself first
    support = bank.support(rows, "c")
    expected = torch.nn.functional.normalize(bank.stores["c"][rows[3]].float().mean(0), dim=0)
    torch.testing.assert_close(support[3], expected)


def test_refusals(models, tmp_path):
    from ovseg.bank import build_bank
    from ovseg.methods.bank import BankMismatchError, MemoryBank, open_for_run
    from ovseg.methods.vfm import tiny_dinov2_vfm

    out = tmp_path / "bank"
    images = _images(tmp_path / "imgs", 2)
    _build(models, images, out)
    with pytest.raises(BankMismatchError, match="built with VFM vfm, this run's VFM is 'radiov3'"):
        MemoryBank.open(out, vfm="radiov3", clips=["main"])
    with pytest.raises(BankMismatchError, match="has CLIP stores for aux, main, not for"):
        MemoryBank.open(out, vfm="vfm", clips=["metaclip_b"])
    with pytest.raises(BankMismatchError, match="another 'main' model"):
        MemoryBank.open(out, vfm="vfm", clips=["main"], fingerprints={"main": "0" * 16})
    bank = open_for_run(out, models.clips["main"], models.vfm, aux_clip=models.clips["aux"])
    assert list(bank.stores) == ["main", "aux"] and bank.aux_clip is models.clips["aux"]
    with pytest.raises(BankMismatchError, match="another 'main' model"):
        open_for_run(out, tiny_clip_backend(7, "main", 32), models.vfm)
    with pytest.raises(BankMismatchError, match="another 'vfm' model"):
        open_for_run(out, models.clips["main"], tiny_dinov2_vfm(seed=9, dim=32, name="vfm"))
    with pytest.raises(FileNotFoundError, match="no bank named"):
        MemoryBank.open(out, vfm="vfm", clips=["main"], name="other")
    with pytest.raises(FileNotFoundError, match="not a memory bank"):
        MemoryBank.open(images, vfm="vfm", clips=["main"])
    other = {**models.clips, "main": tiny_clip_backend(7, "main", 32)}
    with pytest.raises(BankMismatchError, match="another 'main' model"):
        build_bank(images, out, clips=other, vfm=models.vfm, dino=models.dino, name="mine",
                   mask_fn=_mask_fn, progress=False, short_side=56, slide_crop=112)  # fmt: skip
    with pytest.raises(ValueError, match="bank name"):
        _build_named(models, images, out, "a b")
    with pytest.raises(FileNotFoundError, match="no images"):
        _build(models, tmp_path / "bank" / "manifests", tmp_path / "x")
    shutil.copy(images / "img00.png", tmp_path / "imgs" / "sub.png")
    (tmp_path / "imgs" / "deep").mkdir()
    shutil.copy(images / "img00.png", tmp_path / "imgs" / "deep" / "img00.png")
    with pytest.raises(ValueError, match="distinct file stems"):
        _build(models, images, tmp_path / "y")


def _build_named(models, images, out, name):
    from ovseg.bank import build_bank

    return build_bank(images, out, clips=models.clips, vfm=models.vfm, dino=models.dino,
                      name=name, mask_fn=_mask_fn, progress=False)  # fmt: skip


def test_cli_bank_build_and_info(tmp_path, capsys):
    from ovseg.cli import main

    images = _images(tmp_path / "imgs", 2)
    out = tmp_path / "bank"
    tiny = ["--clip", "tiny-random", "--dino", "tiny-random", "--vfm", "tiny-random"]
    assert main(["bank", "build", str(images), "-o", str(out), *tiny[:4]]) == 1
    assert "--vfm is required" in capsys.readouterr().err
    assert main(["bank", "build", str(images), "-o", str(out), "--vfm", "radiov3"]) == 1
    assert "RADIO models are not part" in capsys.readouterr().err
    assert main(["bank", "build", str(tmp_path / "none"), "-o", str(out), *tiny]) == 1
    assert "image folder not found" in capsys.readouterr().err
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in images.iterdir():
        np.savez_compressed(
            masks / f"{p.stem}.npz", instance_mask=_mask_fn(np.array(Image.open(p)))
        )
    args = ["bank", "build", str(images), "-o", str(out), *tiny, "--masks", str(masks),
            "--short-side", "56", "--crop", "112", "--no-progress", "-n", "try"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "try: 2 images" in text and "CLIP store tiny-random" in text
    assert main(["bank", "info", str(out), "--verify"]) == 0
    assert "match their hashes" in capsys.readouterr().out
    assert main(["bank", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["banks"]["try"]["record"]["models"]["vfm"] == "tiny-random"
    assert main(["bank", "info", str(tmp_path / "nope")]) == 1
    assert "bank folder not found" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:ovseg")
def test_cli_builds_a_bank_then_segments_with_it(tmp_path, capsys):
    """The issue's run on tiny models: `ovseg bank build IMAGES -o BANK`, then `ovseg segment
    IMG --method corrclipv2 --bank BANK` (and the preset route, --tiny --bank), with a bank
    built with other models refused in one line."""
    from ovseg.cli import main

    images = _images(tmp_path / "imgs", 3)
    bank = tmp_path / "bank"
    tiny = ["--sam", "tiny-random", "--clip", "tiny-random"]
    build = ["bank", "build", str(images), "-o", str(bank), *tiny, "--dino", "tiny-random"]
    assert main([*build, "--vfm", "tiny-random", "--no-progress"]) == 0, capsys.readouterr().err
    image = str(images / "img00.png")
    seg = ["segment", image, "--classes", "road", "car", "sky", "--bank", str(bank)]
    out = tmp_path / "out"
    code = main([*seg, *tiny, "--vfm", "tiny-random", "--method", "corrclipv2", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    labels = np.array(Image.open(out / "img00.png_labels.png"))
    assert labels.shape == (40, 56) and set(np.unique(labels)) <= {0, 1, 2, 255}
    record = json.loads((out / "ovseg_run.json").read_text())["settings"]
    assert record["method"] == "corrclipv2" and record["bank"] == str(bank.resolve())
    preset = tmp_path / "preset"
    assert main([*seg, "--tiny", "-o", str(preset)]) == 0, capsys.readouterr().err
    assert json.loads((preset / "ovseg_run.json").read_text())["settings"]["method"] == (
        "corrclipv2"
    )
    other = tmp_path / "other"
    code = main([*seg, *tiny, "--vfm", "dinov3-tiny-random", "--method", "corrclipv2", "-o",
                 str(other)])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "dinov3-tiny-random" in err and "Traceback" not in err
