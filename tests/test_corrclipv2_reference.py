"""CorrCLIPv2 against its own code (zdk258/CorrCLIP, folder CorrCLIPv2/) on the same tiny
random weights, regions and CamVid frames: a bank built by ovseg equals one built by the
reference's builder, and ovseg's probabilities and maps equal its segmentor's.

Needs the reference checkouts, given by environment variables (skipped without them):

- ``OVSEG_CORRCLIP_REF``: the CorrCLIP repository (or its ``CorrCLIPv2/`` folder);
- ``OVSEG_DINO_REF``: facebookresearch/dino (its ``vision_transformer.py`` builds the bank's
  DINO ViT-B/8 as the reference loads it from torch.hub);
- ``OVSEG_REF_DEPS`` (optional): a folder with ``mmcv`` (``mmcv-lite``) and ``mmengine``
  when they are not installed (``pip install --target DIR mmcv-lite mmengine yapf addict
  termcolor``).

The reference runs in its own process (``tests/corrclipv2_reference.py`` says what is patched
there: CUDA, float16 and the hub downloads, nothing of the method). ~5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from corrclipv2_models import (
    AUX_NAME,
    MAIN_NAME,
    camvid_pairs,
    clip_cfg,
    label_regions,
    tiny_models,
)

HERE = Path(__file__).resolve().parent
BANK = "camvid"
CLASSES = ["sky", "building; house", "road", "pavement; sidewalk", "tree", "car", "person"]


def _ref_paths():
    ref = os.environ.get("OVSEG_CORRCLIP_REF")
    dino = os.environ.get("OVSEG_DINO_REF")
    if not ref or not dino:
        pytest.skip("OVSEG_CORRCLIP_REF and OVSEG_DINO_REF name the reference checkouts")
    ref = Path(ref)
    ref = ref / "CorrCLIPv2" if (ref / "CorrCLIPv2").is_dir() else ref
    if not (ref / "corrclip_segmentor.py").is_file():
        pytest.skip(f"{ref} is not CorrCLIPv2's folder")
    if not (Path(dino) / "vision_transformer.py").is_file():
        pytest.skip(f"{dino} is not facebookresearch/dino")
    pytest.importorskip("faiss")
    return ref, Path(dino), os.environ.get("OVSEG_REF_DEPS")


def _run_reference(spec: dict, tmp: Path) -> None:
    path = tmp / f"spec_{spec['mode']}.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, str(HERE / "corrclipv2_reference.py"), str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, camvid_dir):
    from PIL import Image

    from ovseg.bank import build_bank

    ref, dino_ref, deps = _ref_paths()
    tmp = tmp_path_factory.mktemp("corrclipv2_ref")
    m = tiny_models()
    saved = {
        "clips": {
            "ViT-B-16-quickgelu": {"cfg": clip_cfg(), "state": m.clip.model.state_dict()},
            AUX_NAME: {"cfg": clip_cfg(), "state": m.aux.model.state_dict()},
        },
        "dino": {
            "cfg": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
            "state": m.dino.state_dict(),
        },
        "vfm": {"cfg": m.vfm.model.config.to_dict(), "state": m.vfm.model.state_dict()},
    }
    torch.save(saved, tmp / "models.pt")

    # the bank: 8 CamVid frames at 180 x 240, regions from their labels
    images, masks = tmp / "bank_images", tmp / "masks"
    work = tmp / "ref"
    ref_masks = work / "memory_bank" / "masks" / BANK / "gt"
    for d in (images, masks, ref_masks):
        d.mkdir(parents=True)
    for stem, img, lab in camvid_pairs(camvid_dir, 8, 0, (180, 240)):
        Image.fromarray(img).save(images / f"{stem}.png")
        ids = label_regions(lab, (60, 80))
        np.savez_compressed(masks / f"{stem}.npz", instance_mask=ids)
        np.savez_compressed(ref_masks / f"{stem}.npz", instance_mask=ids)
    common = {"ref": str(ref), "dino_ref": str(dino_ref), "deps": deps, "work": str(work),
              "models": str(tmp / "models.pt"), "threads": torch.get_num_threads()}  # fmt: skip
    _run_reference(
        {**common, "mode": "build", "images": str(images), "bank": BANK, "mask_model": "gt",
         "clips": ["meta_b", "dfn_b"], "slide_short": 224, "slide_crop": 224},
        tmp,
    )  # fmt: skip
    ours = tmp / "ours"
    build_bank(
        images, ours, clips={"main": m.clip, "aux": m.aux}, vfm=m.vfm, dino=m.dino, name=BANK,
        masks_dir=masks, mask_model="gt", progress=False, short_side=224, slide_crop=224,
    )  # fmt: skip

    # two other frames at full size, regions from their labels
    frames, frame_masks = tmp / "frames", tmp / "frame_masks"
    frames.mkdir()
    frame_masks.mkdir()
    tests = []
    for stem, img, lab in camvid_pairs(camvid_dir, 2, 60):
        Image.fromarray(img).save(frames / f"{stem}.png")
        ids = label_regions(lab, (240, 320), 50)
        np.savez_compressed(frame_masks / f"{stem}.npz", instance_mask=ids)
        tests.append((stem, img, ids))
    (tmp / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    _run_reference(
        {**common, "mode": "segment", "images": [str(frames / f"{s}.png") for s, _, _ in tests],
         "masks_dir": str(frame_masks), "classes_file": str(tmp / "classes.txt"), "bank": BANK,
         "prob_thd": 0.2, "slide_stride": 112, "slide_crop": 336, "short_side": 336,
         "use_support": True, "use_aux": True, "num_support": 20, "out": str(tmp / "ref.npz")},
        tmp,
    )  # fmt: skip
    return SimpleNamespace(m=m, tmp=tmp, ref_bank=work / "memory_bank", ours=ours, tests=tests)


def test_bank_equals_the_reference_builders(setup):
    import faiss

    ref, ours = setup.ref_bank, setup.ours
    for rel in (f"manifests/{BANK}.manifest.txt", f"manifests/{BANK}.images.tsv"):
        assert (ref / rel).read_bytes() == (ours / rel).read_bytes(), rel
    for rel in ("vfm_embeddings/camvid_dinov2.pt", *(
        f"clip_embeddings/camvid_{k}.pt" for k in ("metaclip_b", "dfnclip_b")
    )):  # fmt: skip
        a = torch.load(ref / rel, weights_only=True)
        b = torch.load(ours / rel, weights_only=True)
        assert a.dtype == b.dtype == torch.float16 and a.shape == b.shape, rel
        assert a.shape[0] > 256  # enough regions for the IVF-PQ index
        same = (a.view(torch.int16) == b.view(torch.int16)).float().mean().item()
        diff = (a.float() - b.float()).abs().max().item()
        print(f"{rel}: {a.shape}, {same:.4%} of the float16 values bit-identical, max diff {diff}")
        if rel.startswith("vfm"):  # the keys (and so the index) are bit-identical
            assert same == 1.0, f"{rel}: {same:.6%} bit-identical"
        else:  # float32 rounding in the CLIP forward: a few values (~4e-5) one ulp apart
            assert same > 0.999 and diff <= 1.25e-4, f"{rel}: {same:.4%}, max diff {diff}"
    index = "vfm_embeddings/camvid_dinov2.faiss"
    assert (ref / index).read_bytes() == (ours / index).read_bytes()  # the same index file
    ia = faiss.read_index(str(ref / "vfm_embeddings/camvid_dinov2.faiss"))
    ib = faiss.read_index(str(ours / "vfm_embeddings/camvid_dinov2.faiss"))
    assert type(faiss.downcast_index(ia.index)).__name__ == "IndexIVFPQ"
    keys = torch.load(ours / "vfm_embeddings/camvid_dinov2.pt", weights_only=True).float()
    q = torch.nn.functional.normalize(keys, dim=-1).numpy()
    for index in (ia, ib):
        faiss.downcast_index(index.index).nprobe = 256
    da, na = ia.search(q, 20)
    db, nb = ib.search(q, 20)
    assert (na == nb).all() and np.array_equal(da, db)


def test_probabilities_and_maps_equal_the_reference(setup):
    from ovseg.methods.bank import MemoryBank
    from ovseg.methods.corrclipv2 import CorrCLIPv2, CorrCLIPv2Config
    from ovseg.scoring.vocabulary import Vocabulary

    m = setup.m
    ref = np.load(setup.tmp / "ref.npz")
    bank = MemoryBank.open(setup.ref_bank, vfm="dinov2", clips=["metaclip_b", "dfnclip_b"])
    bank.aux_clip = m.aux
    models = SimpleNamespace(clip=m.clip, vfm=m.vfm, bank=bank, proposer=None)
    vocab = Vocabulary(CLASSES, templates="imagenet")
    config = CorrCLIPv2Config.preset("voc21")  # prob_threshold 0.2, 336 / 112 windows
    method = CorrCLIPv2()
    for stem, image, ids in setup.tests:
        probs = method.probabilities(image, vocab, models, config, regions=ids)
        expected = torch.from_numpy(ref[f"{stem}/probs"])
        assert probs.shape == expected.shape == (len(CLASSES), *image.shape[:2])
        err = (probs - expected).abs().max().item()
        print(f"{stem}: max |probability difference| {err:.2e}")
        assert err < 1e-4
        labels = method.predict(probs, config, background=0)
        final = method.finish(image, probs, labels, models, config, regions=ids).labels
        agree = (final == ref[f"{stem}/labels"]).mean()
        print(f"{stem}: final maps {agree:.6%} equal")
        assert agree >= 0.999
    assert MAIN_NAME  # the main CLIP's name maps to the store the reference reads
