"""Run a reference repository's segmentor without mmsegmentation: import shims and builders.

The reference segmentors subclass mmseg's ``BaseSegmentor`` and read their inputs from mmseg
data samples, but at test time use nothing of mmseg beyond a registry decorator, the base
class's constructor, ``PixelData`` and the sample's ``metainfo`` / ``set_data``. The stubs
below provide exactly that (installed only where mmseg / mmengine are not importable), and
:func:`build_reference` builds a method's reference segmentor on the CPU from an open_clip
model's weights and returns a ``frame -> probabilities`` callable that applies mmseg's test
pipeline (``Resize`` keep-ratio, bilinear; normalisation) and calls ``predict``.

Per reference: its own CLIP class (OpenAI ``clip`` for SCLIP and NACLIP, its modified
``open_clip`` otherwise) loaded with the benchmark's weights; DINO's own ``vision_transformer``
where it loads DINO from ``torch.hub`` (ProxyCLIP, Trident, CorrCLIP); Trident's own
``segment_anything`` SAM ViT-B, built by its ``sam_model_registry`` from a state dict file of the
benchmark's SAM. Their float16 casts are kept float32 (``Tensor.half`` as the identity while
they are built and called). Trident and CorrCLIP read the frame's path: the frame is written
to a PNG (lossless) before each call, and CorrCLIP, built with ``mask_generator=None``, loads
the region id map from ``<instance_mask_path>/<stem>.npz`` (written by ``call.set_regions``).
Imports that the benchmarked configurations never reach are stubbed (ClearCLIP's BLIP and GEM,
``openpyxl``, Trident's ``skimage`` for its refinement, CorrCLIP's optional EoMT, EntitySeg
and SAM 2 generators).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import torch

MEAN = [122.771, 116.746, 104.094]  # the references' data preprocessor (RGB)
STD = [68.501, 66.632, 70.323]


def install_mm_stubs() -> None:
    """Minimal ``mmseg`` / ``mmengine`` modules for the reference segmentors' imports."""
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        import packaging.version  # what SCLIP's and NACLIP's clip.py read of pkg_resources

        shim = types.ModuleType("pkg_resources")
        shim.packaging = packaging
        sys.modules["pkg_resources"] = shim
    if "mmseg" in sys.modules or importlib.util.find_spec("mmseg") is not None:
        return  # installed already (the real libraries, or these stubs)

    class Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    class BaseSegmentor(torch.nn.Module):
        def __init__(self, data_preprocessor=None, init_cfg=None):
            super().__init__()
            self.data_preprocessor = data_preprocessor

    class SegDataPreProcessor:  # the benchmark normalises itself (see build_reference)
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class PixelData:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    mods = {
        name: types.ModuleType(name)
        for name in (
            "mmseg",
            "mmseg.registry",
            "mmseg.models",
            "mmseg.models.segmentors",
            "mmseg.models.data_preprocessor",
            "mmengine",
            "mmengine.structures",
        )
    }
    mods["mmseg.registry"].MODELS = Registry()
    mods["mmseg.models.segmentors"].BaseSegmentor = BaseSegmentor
    mods["mmseg.models.data_preprocessor"].SegDataPreProcessor = SegDataPreProcessor
    mods["mmengine.structures"].PixelData = PixelData
    for name, mod in mods.items():
        sys.modules.setdefault(name, mod)


class DataSample:
    """What ``predict`` reads of an mmseg ``SegDataSample``: ``metainfo`` and ``set_data``."""

    def __init__(self, **metainfo):
        self.metainfo = metainfo

    def set_data(self, data: dict) -> None:
        self.__dict__.update(data)


@contextlib.contextmanager
def _isolated(checkout: Path, stubs: dict[str, types.ModuleType] | None = None):
    """Import from ``checkout`` with its top-level names (``clip``, ``open_clip``, ``pamr``,
    ``prompts``...) taking precedence over installed ones, then put the installed ones back;
    the reference's modules stay alive through the objects imported from them."""
    names = {p.stem if p.suffix == ".py" else p.name for p in checkout.iterdir()}
    names |= set(stubs or {})

    def ours(mod: str) -> bool:
        return mod.split(".")[0] in names

    saved = {k: v for k, v in sys.modules.items() if ours(k)}
    for k in saved:
        del sys.modules[k]
    sys.modules.update(stubs or {})
    sys.path.insert(0, str(checkout))
    try:
        yield
    finally:
        sys.path.remove(str(checkout))
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def import_reference(checkout: Path, module: str, stubs=None) -> types.ModuleType:
    install_mm_stubs()
    with _isolated(checkout, stubs):
        return importlib.import_module(module)


def imrescale(image: np.ndarray, short: int, long: int = 2048) -> np.ndarray:
    """mmcv's ``imrescale`` (keep ratio within ``(long, short)``, cv2 bilinear)."""
    h, w = image.shape[:2]
    f = min(long / max(h, w), short / min(h, w))
    return cv2.resize(image, (int(w * f + 0.5), int(h * f + 0.5)), interpolation=cv2.INTER_LINEAR)


def mmseg_inputs(image: np.ndarray, short: int) -> torch.Tensor:
    """(1, 3, h, w) float32: the frame resized by mmseg's test ``Resize`` and normalised."""
    x = torch.from_numpy(imrescale(image, short)).permute(2, 0, 1).float()
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def openai_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """An OpenAI-format CLIP state dict of the open_clip ``model`` (same key names)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def _slide(cfg) -> dict:
    return dict(
        prob_thd=cfg.prob_threshold,
        logit_scale=cfg.logit_scale,
        slide_stride=cfg.slide_stride,
        slide_crop=cfg.slide_crop or 0,
    )


def _sclip(checkout, model, names_file, cfg, tmp):
    mod = import_reference(checkout, "clip_segmentor")
    ckpt = openai_checkpoint(model, tmp / "clip.pt")
    return mod.CLIPForSegmentation(
        clip_path=str(ckpt),
        name_path=str(names_file),
        device=torch.device("cpu"),
        pamr_steps=cfg.pamr_steps,
        pamr_stride=tuple(cfg.pamr_dilations),
        area_thd=cfg.area_threshold,
        **_slide(cfg),
    )


def _naclip(checkout, model, names_file, cfg, tmp):
    mod = import_reference(checkout, "naclip")
    ckpt = openai_checkpoint(model, tmp / "clip.pt")
    return mod.NACLIP(
        clip_path=str(ckpt),
        name_path=str(names_file),
        device=torch.device("cpu"),
        arch="reduced",
        attn_strategy="naclip",
        gaussian_std=cfg.gaussian_std,
        pamr_steps=cfg.pamr_steps,
        pamr_stride=tuple(cfg.pamr_dilations),
        **_slide(cfg),
    )


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def _unused(*args, **kwargs):
    raise NotImplementedError("not part of the benchmarked configuration")


def _clearclip(checkout, model, names_file, cfg, tmp):
    # BLIP and GEM back other clip_type / model_type values than the one benchmarked
    stubs = {
        "BLIP": _module("BLIP"),
        "BLIP.models": _module("BLIP.models"),
        "BLIP.models.blip_retrieval": _module("BLIP.models.blip_retrieval", blip_retrieval=_unused),
        "gem": _module("gem", create_gem_model=_unused),
    }
    mod = import_reference(checkout, "clearclip_segmentor", stubs)
    # the reference's own open_clip classes (its modified ViT), with the benchmark's weights,
    # in float32: the published code loads the hub weights in float16 for a GPU
    arch = arch_of(model)
    net = mod.create_model(arch, pretrained=None, precision="fp32")
    net.load_state_dict(model.state_dict())
    mod.create_model = lambda *args, **kwargs: net
    seg = mod.ClearCLIPSegmentation(
        clip_type="CLIP",
        vit_type="ViT-B/16" if "B" in arch else "ViT-L-14",
        model_type="ClearCLIP",
        name_path=str(names_file),
        device=torch.device("cpu"),
        ignore_residual=True,
        **_slide(cfg),
    )
    seg.float_inputs = True  # its predict casts the inputs to float16: kept float32 on the CPU
    return seg


def model_is(model, arch: str) -> bool:
    """Whether the open_clip ``model`` has the image tower of ``arch`` (width and patch)."""
    width = model.visual.conv1.out_channels
    patch = model.visual.conv1.kernel_size[0]
    return {"ViT-B-16": (768, 16), "ViT-B-32": (768, 32), "ViT-L-14": (1024, 14)}[arch] == (
        width,
        patch,
    )


@contextlib.contextmanager
def _float32_half():
    """``Tensor.half`` as the identity (restored after): the reference's GPU cast, kept in
    float32 so that both sides compute in the same precision on the CPU."""
    half = torch.Tensor.half
    torch.Tensor.half = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.half = half


def _ref_dino(dino, dino_checkout):
    """DINO's own ViT class (what its ``torch.hub`` entry builds) with ``dino``'s weights."""
    if dino is None or dino_checkout is None:
        raise ValueError("the reference needs DINO's code: --dino-repo (facebookresearch/dino)")
    vit = import_reference(
        dino_checkout,
        "vision_transformer",
        {"utils": _module("utils", trunc_normal_=torch.nn.init.trunc_normal_)},
    )
    patch = dino.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, tuple) else int(patch)
    width = dino.cls_token.shape[-1]
    ref_dino = {384: vit.vit_small, 768: vit.vit_base}[width](patch_size=patch)
    ref_dino.load_state_dict(dino.state_dict())
    return ref_dino


@contextlib.contextmanager
def _hub(model):
    """``torch.hub.load`` returning ``model`` (the references load DINO from the hub)."""
    hub_load = torch.hub.load
    torch.hub.load = lambda *args, **kwargs: model
    try:
        yield
    finally:
        torch.hub.load = hub_load


def _own_clip(mod, model):
    """The reference's own open_clip classes (its modified ViT) with the benchmark's weights, in
    float32; its ``create_model`` then returns them whatever it is asked for."""
    net = mod.create_model(arch_of(model), pretrained=None, precision="fp32")
    net.load_state_dict(model.state_dict())
    mod.create_model = lambda *args, **kwargs: net
    return net


def _proxyclip(checkout, model, names_file, cfg, tmp, dino=None, dino_checkout=None, **_):
    ref_dino = _ref_dino(dino, dino_checkout)
    # its myutils imports openpyxl for spreadsheet logging, unused by the segmentor
    mod = import_reference(checkout, "proxyclip_segmentor", {"openpyxl": _module("openpyxl")})
    _own_clip(mod, model)
    with _hub(ref_dino), _float32_half():  # it casts CLIP and DINO to float16 for a GPU
        seg = mod.ProxyCLIPSegmentation(
            clip_type="openai",
            model_type=arch_of(model),
            vfm_model="dino",
            name_path=str(names_file),
            device=torch.device("cpu"),
            beta=cfg.beta,
            gamma=cfg.gamma,
            **_slide(cfg),
        )
    seg.float_inputs = True
    return seg


def _trident(checkout, model, names_file, cfg, tmp, dino=None, dino_checkout=None, sam=None,
             **_):  # fmt: skip
    if sam is None:
        raise ValueError("Trident's reference needs SAM's weights (a segment_anything Sam)")
    ref_dino = _ref_dino(dino, dino_checkout)
    # openpyxl (its myutils' spreadsheet logging) and skimage (its SAM refinement, off here)
    stubs = {
        "openpyxl": _module("openpyxl"),
        "skimage": _module("skimage", measure=_module("skimage.measure")),
    }
    mod = import_reference(checkout, "trident", stubs)
    _own_clip(mod, model)
    ckpt = tmp / "sam.pt"  # its own segment_anything builds SAM and loads this state dict
    torch.save({k: v.detach().clone() for k, v in sam.state_dict().items()}, ckpt)
    patch = model.visual.conv1.kernel_size[0]
    with _hub(ref_dino), _float32_half():  # it casts CLIP, DINO and SAM to float16
        seg = mod.Trident(
            clip_type="openai",
            model_type=f"ViT-B/{patch}",  # it reads the patch from the name's last two digits
            vfm_model="dino",
            name_path=str(names_file),
            device=torch.device("cpu"),
            beta=cfg.beta,
            gamma=cfg.gamma,
            sam_refinement=False,  # ovseg's pixel probabilities are the map before it
            sam_model_type="vit_b",
            sam_ckpt=str(ckpt),
            cos_fac=cfg.cos_fac,
            refine_neg_cos=cfg.refine_neg_cos,
            **{k: v for k, v in _slide(cfg).items()},
        )
    seg.float_inputs = True
    seg.needs_file = True  # it reads the frame again from img_path (cv2.imread)
    return seg


def _corrclip(checkout, model, names_file, cfg, tmp, dino=None, dino_checkout=None,
              regions=None, **_):  # fmt: skip
    if regions is None:
        raise ValueError("CorrCLIP's reference needs the region id map (regions=)")
    ref_dino = _ref_dino(dino, dino_checkout)
    if (checkout / "CorrCLIPv1").is_dir():
        checkout = checkout / "CorrCLIPv1"
    # its optional mask generators (EoMT, EntitySeg, SAM 2) are imported inside try blocks:
    # empty stand-ins make those imports fail as they do where the packages are absent
    stubs = {name: _module(name) for name in ("eomt", "CropFormer", "sam2", "detectron2")}
    stubs["openpyxl"] = _module("openpyxl")
    mod = import_reference(checkout, "corrclip_segmentor", stubs)
    _own_clip(mod, model)
    # mask_generator=None: it loads the instance mask of each frame from instance_mask_path
    # (<stem>.npz, key instance_mask): the same id map ovseg is given
    masks = tmp / "masks"
    masks.mkdir(exist_ok=True)
    np.savez(masks / "frame.npz", instance_mask=np.asarray(regions))
    with _hub(ref_dino), _float32_half():
        seg = mod.CorrCLIPSegmentation(
            clip_type="openai",
            model_type=arch_of(model),
            dino_type="dino_vitb8",
            name_path=str(names_file),
            device=torch.device("cpu"),
            instance_mask_path=str(masks),
            mask_generator=None,
            **_slide(cfg),
        )
    seg.float_inputs = True
    seg.needs_file = True  # the mask file is named after img_path's stem
    seg.logits_field = "seg_logit"  # its data sample field (the others: seg_logits)
    return seg


def arch_of(model) -> str:
    """The open_clip config name of ``model``'s architecture (``-quickgelu`` included)."""
    arch = next(a for a in ("ViT-B-16", "ViT-L-14", "ViT-B-32") if model_is(model, a))
    quick = type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    return arch + "-quickgelu" if quick else arch


BUILDERS = {
    "sclip": _sclip,
    "naclip": _naclip,
    "clearclip": _clearclip,
    "proxyclip": _proxyclip,
    "trident": _trident,
    "corrclip": _corrclip,
}


def build_reference(name: str, checkout: Path, model, classes, cfg, tmp: Path, **extra):
    """``frame (H, W, 3) uint8 RGB -> probabilities float32 (K, H, W)`` from the reference
    segmentor of ``name`` in ``checkout``, built on ``model``'s weights with ``cfg``'s options."""
    if name not in BUILDERS:
        raise ValueError(f"no reference builder for {name!r}; known: {', '.join(BUILDERS)}")
    names_file = tmp / "classes.txt"
    names_file.write_text("\n".join(classes) + "\n")
    seg = BUILDERS[name](checkout, model, names_file, cfg, tmp, **extra).eval()
    frame_file = tmp / "frame.png"  # Trident and CorrCLIP read their frame's path

    def call(image: np.ndarray) -> np.ndarray:
        inputs = mmseg_inputs(image, cfg.short_side)
        h, w = image.shape[:2]
        if getattr(seg, "needs_file", False):
            cv2.imwrite(str(frame_file), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        sample = DataSample(
            ori_shape=(h, w), img_shape=tuple(inputs.shape[2:]), img_path=str(frame_file)
        )
        sample.img_path = str(frame_file)  # Trident and CorrCLIP read it as an attribute
        keep = _float32_half() if getattr(seg, "float_inputs", False) else contextlib.nullcontext()
        with torch.no_grad(), keep:
            out = seg.predict(inputs, [sample])[0]
        field = getattr(out, getattr(seg, "logits_field", "seg_logits"))
        return field.data.float().numpy()

    def set_regions(ids: np.ndarray) -> None:
        """CorrCLIP: the instance mask its next ``predict`` loads (``<stem>.npz``)."""
        np.savez(tmp / "masks" / f"{frame_file.stem}.npz", instance_mask=np.asarray(ids))

    call.segmentor = seg  # the reference object itself (its query features, options)
    call.set_regions = set_regions
    return call
