"""EoMT regions (CorrCLIP's ``mask_generator="eomt"``) on tiny random EoMTs of transformers'
class: equal to an independent transcription of the reference's procedure (and to the
reference's own functions when its checkout is given), end to end in CorrCLIP and CorrCLIPv2
on a CamVid frame, and bad options refused.

``OVSEG_CORRCLIP_REF`` (the CorrCLIP repository) adds the comparison with the reference's own
``EoMTGenerator.generate`` and EoMT's ``lightning_module.py`` methods.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovseg.models.eomt_weights import tiny_eomt
from ovseg.proposals.eomt import COCO_PANOPTIC_STUFF, eomt_regions

pytest.importorskip("transformers")

STUFF3 = (1, 2)  # the stuff classes given to 3-class tiny models, so that stuff segments merge


def _frames(n=3, seed=0):
    """Smooth random RGB images of odd sizes (not multiples of the 64 input side)."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in [(45, 77), (90, 61), (64, 64)][:n]:
        low = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)))
    return out


# -- the reference's procedure, transcribed from CorrCLIPv2/mask_generators (factory.py
#    EoMTGenerator.generate; eomt/training/lightning_module.py; eomt/models/{eomt,vit}.py) --
def reference_regions(model, image, stuff, mask_thresh=0.8, overlap_thresh=0.8, stats=None):
    from torchvision.transforms.v2.functional import pad

    side = (model.config.image_size, model.config.image_size)
    img = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # tv_tensors.Image of the PIL image
    size = img.shape[-2:]
    factor = min(side[0] / size[0], side[1] / size[1])
    new_h, new_w = [round(s * factor) for s in size]
    pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((new_w, new_h), Image.BILINEAR)
    resized = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
    padded = pad(resized, [0, 0, side[1] - resized.shape[-1], side[0] - resized.shape[-2]])
    x = torch.stack([padded]) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
    with torch.inference_mode():
        out = model(pixel_values=(x - mean) / std)
        mask_logits = F.interpolate(out.masks_queries_logits, side, mode="bilinear")
        logits = F.interpolate(mask_logits[0][:, :new_h, :new_w][None], size, mode="bilinear")
        class_logits = out.class_queries_logits
        num_classes = class_logits.shape[-1] - 1
        scores, classes = class_logits.softmax(dim=-1).max(-1)
        preds = -torch.ones((*size, 2), dtype=torch.long)
        preds[:, :, 0] = num_classes
        keep = classes[0].ne(num_classes) & (scores[0] > mask_thresh)
        if not keep.any():
            return preds[..., 1]
        masks = logits[0].sigmoid()
        segments = -torch.ones(*masks.shape[-2:], dtype=torch.long)
        mask_ids = (scores[0][keep][..., None, None] * masks[keep]).argmax(0)
        stuff_segment_ids, segment_id, segment_and_class_ids = {}, 0, []
        for k, class_id in enumerate(classes[0][keep].tolist()):
            orig_mask = masks[keep][k] >= 0.5
            new_mask = mask_ids == k
            final_mask = orig_mask & new_mask
            orig_area, new_area = orig_mask.sum().item(), new_mask.sum().item()
            final_area = final_mask.sum().item()
            if (orig_area == 0 or new_area == 0 or final_area == 0
                    or new_area / orig_area < overlap_thresh):  # fmt: skip
                if stats is not None:
                    stats["dropped"] += 1
                continue
            if class_id in stuff:
                if class_id in stuff_segment_ids:
                    segments[final_mask] = stuff_segment_ids[class_id]
                    if stats is not None:
                        stats["merged"] += 1
                    continue
                stuff_segment_ids[class_id] = segment_id
            segments[final_mask] = segment_id
            segment_and_class_ids.append((segment_id, class_id))
            segment_id += 1
        for segment_id, class_id in segment_and_class_ids:
            segment_mask = segments == segment_id
            preds[:, :, 0] = torch.where(segment_mask, class_id, preds[:, :, 0])
            preds[:, :, 1] = torch.where(segment_mask, segment_id, preds[:, :, 1])
    return preds[..., 1]


def test_regions_equal_the_reference_procedure():
    stats = {"dropped": 0, "merged": 0}
    counts = []
    for seed in range(3):
        model = tiny_eomt(seed, num_labels=3)
        for image in _frames():
            ids = eomt_regions(model, image, stuff=STUFF3)
            ref = reference_regions(model, image, STUFF3, stats=stats)
            assert ids.dtype == np.int64 and ids.shape == image.shape[:2]
            assert (ids == ref.numpy() + 1).all()  # 0 = unsegmented, segment i -> i + 1
            counts.append(len(np.unique(ids)))
    # the cases the merge has: several segments, dropped queries, merged stuff queries
    assert max(counts) >= 4 and stats["dropped"] > 0 and stats["merged"] > 0


def test_coco_stuff_classes_by_default():
    model = tiny_eomt(1)  # 133 classes: COCO panoptic, stuff 80..132
    image = _frames(1)[0]
    ids = eomt_regions(model, image)
    assert (ids == reference_regions(model, image, COCO_PANOPTIC_STUFF).numpy() + 1).all()
    assert len(np.unique(ids)) >= 2


def test_no_masked_attention_and_bad_input():
    model = tiny_eomt(0)
    assert not model.attn_mask_probs.any() and not model.training
    with pytest.raises(TypeError, match="EomtForUniversalSegmentation"):
        eomt_regions(torch.nn.Linear(2, 2), _frames(1)[0])
    with pytest.raises(ValueError, match="RGB uint8"):
        eomt_regions(model, np.zeros((8, 8), np.uint8))


# -- the reference's own code, when its checkout is given -------------------------------------
def _reference_eomt(root: Path):
    """The reference's ``EoMTGenerator`` (its ``generate`` unchanged) around a shim of EoMT's
    Lightning module: its resize, revert and panoptic methods, taken from
    ``lightning_module.py`` (which imports lightning, wandb and torchmetrics, so only these
    functions are executed), and the network forward of ``LightningModule.forward`` +
    ``EoMT.forward`` (``imgs / 255``, ImageNet normalisation, last layer's logits)."""
    from torch.nn.functional import interpolate
    from torchvision.transforms.v2.functional import pad

    folder = root / "CorrCLIPv2" / "mask_generators"
    spec = importlib.util.spec_from_file_location("ref_eomt_factory", folder / "factory.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    source = (folder / "eomt" / "training" / "lightning_module.py").read_text()
    wanted = {
        "scale_img_size_instance_panoptic",
        "resize_and_pad_imgs_instance_panoptic",
        "revert_resize_and_pad_logits_instance_panoptic",
        "to_per_pixel_preds_panoptic",
    }
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    defs = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {d.name for d in defs} == wanted
    namespace = {"torch": torch, "np": np, "Image": Image, "pad": pad, "interpolate": interpolate}
    exec(compile(ast.Module(body=defs, type_ignores=[]), "lightning_module.py", "exec"), namespace)

    class Shim:
        def __init__(self, model, stuff):
            self.network, self.stuff_classes = model, list(stuff)
            self.img_size = (model.config.image_size, model.config.image_size)
            self.num_classes = model.config.num_labels
            self.mask_thresh, self.overlap_thresh = 0.8, 0.8  # MaskClassificationPanoptic

        def __call__(self, imgs):
            x = imgs / 255.0
            mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
            out = self.network(pixel_values=(x - mean) / std)
            return [out.masks_queries_logits], [out.class_queries_logits]

    for name in wanted:
        setattr(Shim, name, namespace[name])

    def generator(model, stuff):
        gen = object.__new__(factory.EoMTGenerator)  # its __init__ loads Lightning
        gen.device, gen.autocast_dtype, gen.apply_exif = "cpu", torch.float16, False
        gen.model = Shim(model, stuff)
        return gen

    return generator


def test_regions_equal_the_reference_code(tmp_path):
    ref = os.environ.get("OVSEG_CORRCLIP_REF")
    if not ref:
        pytest.skip("OVSEG_CORRCLIP_REF names the CorrCLIP checkout")
    root = Path(ref)
    root = root.parent if root.name == "CorrCLIPv2" else root
    if not (root / "CorrCLIPv2" / "mask_generators" / "factory.py").is_file():
        pytest.skip(f"{root} is not the CorrCLIP repository")
    pytest.importorskip("torchvision")
    generator = _reference_eomt(root)
    import warnings

    for seed, (num_labels, stuff) in enumerate([(3, STUFF3), (133, COCO_PANOPTIC_STUFF)]):
        model = tiny_eomt(seed, num_labels=num_labels)
        gen = generator(model, stuff)
        for i, image in enumerate(_frames()):
            path = tmp_path / f"{seed}_{i}.png"
            Image.fromarray(image).save(path)
            with warnings.catch_warnings():  # its CUDA autocast is off on a CPU
                warnings.simplefilter("ignore")
                ref = gen.generate(str(path))
            assert (eomt_regions(model, image, stuff=stuff) == ref.numpy() + 1).all()


# -- in the methods ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_dino():
    from test_methods_corrclip import models

    return models.__wrapped__()


def test_corrclip_with_eomt_regions_on_camvid(camvid_image, clip_dino):
    from ovseg import Segmenter
    from ovseg.methods.regions import region_vote

    clip, dino = clip_dino
    options = dict(short_side=112, slide_crop=112, slide_stride=112)
    seg = Segmenter(None, clip, "cpu", dino=dino, method="corrclip", mask_generator="eomt",
                    eomt_model="eomt-tiny-random", **options)  # fmt: skip
    image = camvid_image
    ids = seg.method.region_map(image, seg.models)
    assert (ids == eomt_regions(tiny_eomt(), image)).all() and len(np.unique(ids)) >= 3
    classes = ["road", "car", "sky", "building"]
    probs = seg.pixel_probabilities(image, classes)
    result = seg.segment(image, classes)
    assert (result.label_map == region_vote(probs.argmax(0), ids)).all()
    # given masks still win over the generator
    given = np.zeros(image.shape[:2], np.int64)
    assert (seg.segment(image, classes, masks=given).label_map == probs.argmax(0)).all()
    # the same method with SAM regions gives other regions
    other = seg.method.region_map(image, seg.models, np.ones(image.shape[:2], np.int64))
    assert not (other == ids).all()


def test_corrclipv2_with_eomt_regions_on_camvid(camvid_image):
    from corrclipv2_models import tiny_clip_backend

    from ovseg import Segmenter
    from ovseg.methods.vfm import tiny_dinov2_vfm

    seg = Segmenter(None, tiny_clip_backend(1, "main", embed_dim=32), "cpu",
                    vfm=tiny_dinov2_vfm(seed=3, dim=32, name="vfm"), method="corrclipv2",
                    use_bank=False, mask_generator="eomt", eomt_model="eomt-tiny-random",
                    short_side=112, slide_crop=112, slide_stride=112)  # fmt: skip
    image = camvid_image
    ids = seg.method.region_map(image, seg.models)
    assert (ids == eomt_regions(tiny_eomt(), image)).all()
    probs = seg.pixel_probabilities(image, ["road", "car", "sky"])
    with_masks = seg.pixel_probabilities(image, ["road", "car", "sky"], masks=ids)
    assert probs.shape == (3, *image.shape[:2]) and np.array_equal(probs, with_masks)
    result = seg.segment(image, ["road", "car", "sky"])
    assert result.label_map.shape == image.shape[:2]


def test_cli_eomt_regions(camvid_frame, tmp_path):
    from ovseg.cli import main

    out = tmp_path / "out"
    args = ["segment", str(camvid_frame), "--classes", "road", "sky", "-o", str(out),
            "--method", "corrclip", "--sam", "tiny-random", "--clip", "tiny-random",
            "--dino", "tiny-random", "--option", "mask_generator=eomt",
            "--option", "eomt_model=eomt-tiny-random", "--option", "short_side=112",
            "--option", "slide_crop=112", "--option", "slide_stride=112"]  # fmt: skip
    assert main(args) == 0
    assert any(out.iterdir())


# -- bad options ------------------------------------------------------------------------------
def test_bad_options_are_refused(tmp_path, monkeypatch, clip_dino, capsys):
    from huggingface_hub import constants

    from ovseg import Segmenter
    from ovseg.cli import main
    from ovseg.methods.registry import method_class
    from ovseg.models.eomt_weights import build_eomt, check_eomt_spec

    for method in ("corrclip", "corrclipv2"):
        with pytest.raises(ValueError, match="mask_generator must be one of sam, eomt"):
            method_class(method)(mask_generator="entityseg")
        with pytest.raises(ValueError, match="eomt_model must be"):
            method_class(method)(mask_generator="eomt", eomt_model=3)
    clip, dino = clip_dino
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="ovseg weights download eomt"):
        Segmenter(None, clip, "cpu", dino=dino, method="corrclip", mask_generator="eomt")
    with pytest.raises(FileNotFoundError, match="hf download nobody/eomt-missing"):
        check_eomt_spec("nobody/eomt-missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_eomt(str(tmp_path), "cpu")
    with pytest.raises(ValueError, match="unknown EoMT model"):
        check_eomt_spec("eomt-huge")
    with pytest.raises(TypeError, match="EoMT model"):
        check_eomt_spec(3)
    code = main(["segment", "x.png", "--classes", "a", "-o", str(tmp_path / "o"),
                 "--method", "corrclip", "--sam",
                 "tiny-random", "--clip", "tiny-random", "--dino", "tiny-random",
                 "--option", "mask_generator=entityseg"])  # fmt: skip
    assert code != 0 and "mask_generator must be one of sam, eomt" in capsys.readouterr().err


def test_local_folder_roundtrip(tmp_path):
    from ovseg.models.eomt_weights import build_eomt

    model = tiny_eomt(2)
    model.save_pretrained(tmp_path / "eomt")
    loaded = build_eomt(str(tmp_path / "eomt"), "cpu")
    assert not loaded.attn_mask_probs.any()
    image = _frames(1)[0]
    assert (eomt_regions(loaded, image) == eomt_regions(model, image)).all()
