"""Run CorrCLIPv2's own code (zdk258/CorrCLIP, folder CorrCLIPv2/) on a CPU, for the
comparison tests. Run in its own process (its vendored ``open_clip`` shadows the installed
one): ``python tests/corrclipv2_reference.py SPEC.json``.

The reference expects CUDA, float16, mmsegmentation, detectron2, torch.hub downloads and GPU
FAISS. Only those are patched here, nothing of its method or its builder:

- CUDA: ``.to("cuda")`` / ``device="cuda:0"`` go to the CPU, ``torch.cuda.*`` bookkeeping is
  a no-op, worker processes run inline. float16 on CUDA becomes float32 on the CPU, as ovseg
  computes: ``.half()`` keeps float32, a float16 tensor moved to CUDA or created there is
  float32 (the stores are still written float16 by the reference's own writer).
- Models: ``open_clip.create_model`` returns the test's tiny CLIPs (the vendored class, the
  test's weights); ``torch.hub.load`` returns DINO's own ViT (facebookresearch/dino,
  ``vision_transformer.py``) with the test's weights for ``dino_vitb8``, and for
  ``dinov2_vitl14_reg`` the test's transformers DINOv2 behind the hub model's
  ``get_intermediate_layers(x, reshape=True)`` (normed patch tokens); the VFM registry's
  dimension is set to that model's.
- Libraries absent here: mmseg's ``BaseSegmentor`` / registries (plain stand-ins),
  ``openpyxl`` / ``prettytable`` (unused), detectron2's ``_apply_exif_orientation`` (the
  reference's own byte-for-byte port in ``mask_generators/factory.py``), FAISS's GPU calls (the
  CPU index, copied as ``index_cpu_to_gpu`` does). ``mmcv`` / ``mmengine`` are the real
  packages (``deps`` in the spec).

SPEC keys: ``ref`` (the CorrCLIPv2 folder), ``dino_ref`` (facebookresearch/dino checkout),
``deps`` (a folder with mmcv and mmengine, or null), ``work`` (scratch folder, the reference's
repository root for ``memory_bank/``), ``models`` (``torch.save`` of the models' configs and
weights), ``mode`` (``build`` or ``segment``) and the mode's settings (see ``main``).
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import shutil
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch

_REAL_TENSOR_TO = torch.Tensor.to
_REAL_MODULE_TO = torch.nn.Module.to
_REAL_ZEROS = torch.zeros


def _cpu(x):
    if isinstance(x, str) and x.startswith("cuda"):
        return "cpu"
    if isinstance(x, torch.device) and x.type == "cuda":
        return torch.device("cpu")
    return x


def _decuda(args, kwargs):
    args = tuple(_cpu(a) for a in args)
    if "device" in kwargs:
        kwargs = {**kwargs, "device": _cpu(kwargs["device"])}
    return args, kwargs


def patch_torch():
    def tensor_to(self, *args, **kwargs):
        to_cuda = any(_cpu(a) is not a for a in (*args, kwargs.get("device")))
        args, kwargs = _decuda(args, kwargs)
        out = _REAL_TENSOR_TO(self, *args, **kwargs)
        return out.float() if to_cuda and out.dtype == torch.float16 else out

    def zeros(*args, **kwargs):
        if kwargs.get("dtype") == torch.float16 and _cpu(kwargs.get("device")) is not kwargs.get(
            "device"
        ):
            kwargs = {**kwargs, "dtype": torch.float32}
        return _REAL_ZEROS(*args, **_decuda((), kwargs)[1])

    def module_to(self, *args, **kwargs):
        args, kwargs = _decuda(args, kwargs)
        return _REAL_MODULE_TO(self, *args, **kwargs)

    torch.Tensor.to = tensor_to
    torch.nn.Module.to = module_to
    torch.zeros = zeros
    torch.Tensor.half = lambda self, *a, **k: self.float() if self.is_floating_point() else self
    torch.nn.Module.half = lambda self: self
    torch.cuda.device_count = lambda: 1
    torch.cuda.set_device = lambda *a: None
    torch.cuda.empty_cache = lambda: None
    torch.cuda.current_device = lambda: 0

    class InlineProcess:
        def __init__(self, target, args=(), kwargs=None):
            self.target, self.args, self.kwargs = target, args, kwargs or {}

        def start(self):
            self.target(*self.args, **self.kwargs)

        def join(self):
            pass

    torch.multiprocessing.Process = InlineProcess
    torch.multiprocessing.set_start_method = lambda *a, **k: None


def stub_modules(ref: Path):
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class Registry:
        def register_module(self, *a, **k):
            return lambda cls: cls

    class BaseSegmentor(torch.nn.Module):
        def __init__(self, data_preprocessor=None):
            super().__init__()

    class IoUMetric:
        pass

    module("mmseg")
    module("mmseg.models")
    module("mmseg.models.segmentors", BaseSegmentor=BaseSegmentor)
    module("mmseg.models.data_preprocessor", SegDataPreProcessor=lambda **k: None)
    module("mmseg.registry", MODELS=Registry(), METRICS=Registry())
    module("mmseg.evaluation")
    module("mmseg.evaluation.metrics")
    module("mmseg.evaluation.metrics.iou_metric", IoUMetric=IoUMetric)
    module("openpyxl")
    module("prettytable", PrettyTable=object)
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_ref_mask_factory", ref / "mask_generators" / "factory.py"
    )
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    module("detectron2")
    module("detectron2.data")
    module(
        "detectron2.data.detection_utils",
        _apply_exif_orientation=factory._apply_exif_orientation,
        read_image=None,
    )


def patch_faiss():
    import faiss

    faiss.StandardGpuResources = lambda: None
    # a copy, as the GPU one: the segmentor keeps only the inner index of an IDMap2 it drops
    faiss.index_cpu_to_gpu = lambda res, device, index: faiss.clone_index(index)


class HubDinov2(torch.nn.Module):
    """A transformers DINOv2 behind the hub model's ``get_intermediate_layers``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.patch_size = int(model.config.patch_size)
        self.prefix = 1 + int(getattr(model.config, "num_register_tokens", 0))

    def get_intermediate_layers(self, x, n=1, reshape=False):
        out = self.model(pixel_values=x).last_hidden_state[:, self.prefix :]
        b, _, h, w = x.shape
        p = self.patch_size
        if reshape:
            out = out.reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous()
        return (out,)


def load_models(path: Path, dino_ref: Path):
    import open_clip
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    saved = torch.load(path, weights_only=False)
    clips = {}
    for key, entry in saved["clips"].items():
        model = open_clip.model.CLIP(**entry["cfg"]).eval()
        model.load_state_dict(entry["state"])
        clips[key] = model
    sys.path.insert(0, str(dino_ref))
    import vision_transformer as dino_vits

    d = saved["dino"]
    dino = dino_vits.VisionTransformer(
        patch_size=d["cfg"]["patch_size"],
        embed_dim=d["cfg"]["embed_dim"],
        depth=d["cfg"]["depth"],
        num_heads=d["cfg"]["num_heads"],
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    dino.load_state_dict(d["state"])
    v = saved["vfm"]
    vfm = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**v["cfg"])).eval()
    vfm.load_state_dict(v["state"])
    return clips, dino, HubDinov2(vfm)


def install_models(clips, dino, vfm):
    import open_clip
    import vfms.factory

    def create_model(model_type, pretrained=None, precision="fp32", **kwargs):
        return clips[model_type]

    def get_tokenizer(model_name="", **kwargs):
        return open_clip.tokenizer.SimpleTokenizer()

    def hub_load(repo, entry, *args, **kwargs):
        if entry == "dino_vitb8":
            return dino
        if entry == "dinov2_vitl14_reg":
            return vfm
        raise ValueError(f"no stand-in for torch.hub {repo} {entry}")

    open_clip.create_model = create_model
    open_clip.get_tokenizer = get_tokenizer
    torch.hub.load = hub_load
    vfms.factory.VFM_REGISTRY["dinov2"]["dim"] = int(vfm.model.config.hidden_size)


def run_script(script: Path, argv: list[str]):
    old = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise RuntimeError(f"{script.name} exited with {e.code}") from e
    finally:
        sys.argv = old


def build(spec: dict, ref: Path, work: Path):
    """The reference builder's steps 2-4 on masks the test wrote to
    ``work/memory_bank/masks/{bank}/{mask_model}/``."""
    builder = work / "memory_bank_builder"
    shutil.copytree(ref / "memory_bank_builder", builder, dirs_exist_ok=True)
    common = ["--data_name", spec["bank"], "--mask_model", spec["mask_model"]]
    run_script(builder / "build_manifest.py", [*common, "--img", spec["images"], "--workers", "1"])
    for clip in spec["clips"]:
        run_script(
            builder / "generate_clip_embeddings.py",
            [*common, "--img", spec["images"], "--clip", clip, "--slide_short",
             str(spec["slide_short"]), "--slide_crop", str(spec["slide_crop"])],
        )  # fmt: skip
    run_script(
        builder / "generate_vfm_embeddings.py",
        [*common, "--img", spec["images"], "--model", "dinov2"],
    )


class _Sample:
    """The parts of an mmseg ``SegDataSample`` the segmentor reads and writes."""

    def __init__(self, path: str):
        import cv2

        self.img_path = path
        h, w = cv2.imread(path).shape[:2]
        self.metainfo = {"img_path": path, "ori_shape": (h, w)}
        self.data = {}

    def set_data(self, d):
        self.data.update(d)


def segment(spec: dict):
    """CorrCLIPSegmentation.predict on each image; saves its class probabilities
    (``seg_logit``) and final map (``pred_sem_seg``) per image."""
    import corrclip_segmentor as seg_mod
    import cv2
    import mmcv
    from mmengine.structures import PixelData  # noqa: F401  (the real one, used by the code)

    seg = seg_mod.CorrCLIPSegmentation(
        clip_type="metaclip_fullcc",
        model_type="ViT-B-16-quickgelu",
        name_path=spec["classes_file"],
        aux_clip_type=None,
        aux_model_type="hf-hub:apple/DFN2B-CLIP-ViT-B-16",
        vfm_type="dinov2",
        device=torch.device("cpu"),
        dtype=torch.float32,
        prob_thd=spec["prob_thd"],
        slide_stride=spec["slide_stride"],
        slide_crop=spec["slide_crop"],
        instance_mask_path=spec["masks_dir"],
        mask_generator=None,
        use_support_embedding=spec["use_support"],
        use_aux_model=spec["use_aux"],
        num_support=spec["num_support"],
        mb_region_set=spec["bank"],
        mb_main_encoder="metaclip_b",
        mb_aux_encoder="dfnclip_b",
    )
    mean = torch.tensor([122.771, 116.746, 104.094]).view(3, 1, 1)
    std = torch.tensor([68.501, 66.632, 70.323]).view(3, 1, 1)
    results = {}
    for path in spec["images"]:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)  # mmcv LoadImageFromFile (cv2 backend)
        bgr = mmcv.imrescale(bgr, (2048, spec["short_side"]), interpolation="bilinear")
        x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[[2, 1, 0]].float()
        x = ((x - mean) / std)[None]  # SegDataPreProcessor: bgr_to_rgb, normalise

        sample = _Sample(path)
        with torch.inference_mode():
            seg.predict(x, [sample])
        stem = Path(path).stem
        results[f"{stem}/probs"] = sample.data["seg_logit"].data.float().numpy()
        results[f"{stem}/labels"] = sample.data["pred_sem_seg"].data[0].numpy()
    np.savez(spec["out"], **results)


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    ref, work = Path(spec["ref"]).resolve(), Path(spec["work"]).resolve()
    if spec.get("deps"):
        sys.path.insert(0, spec["deps"])
    sys.path.insert(0, str(ref))
    torch.set_num_threads(int(spec.get("threads", torch.get_num_threads())))
    patch_torch()
    stub_modules(ref)
    patch_faiss()
    clips, dino, vfm = load_models(Path(spec["models"]), Path(spec["dino_ref"]))
    install_models(clips, dino, vfm)
    os.chdir(work)
    with contextlib.redirect_stdout(sys.stderr):
        if spec["mode"] == "build":
            build(spec, ref, work)
        else:
            segment(spec)


if __name__ == "__main__":
    main()
