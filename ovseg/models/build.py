"""Build SAM and CLIP from a registry name, a checkpoint path, or an already built model.

SAM specs: ``"vit_b" | "vit_l" | "vit_h"`` (official checkpoints from the weights cache), a
path to a SAM ``.pth``/``.safetensors`` file (architecture read from the weights), a
``segment_anything.modeling.Sam``, or ``"tiny-random"``; SAM 2 specs (``"sam2.1_hiera_tiny"``,
``"NAME:/path.pt"``, ``"facebook/sam2.1-hiera-tiny"``, a ``transformers`` ``Sam2Model``,
``"sam2-tiny-random"``) go to :func:`ovseg.models.sam2_weights.build_sam2`; SAM 3 specs
(``"sam3"``, ``"facebook/sam3"`` or a local folder, a ``transformers`` SAM 3 model,
``"sam3-tiny-random"``) to :func:`ovseg.models.sam3_weights.build_sam3`.

CLIP specs: ``"ARCH/TAG"`` (an open_clip architecture and pretrained tag, e.g.
``"ViT-B-16/openai"``), ``"ARCH:PATH"`` (open_clip architecture, local checkpoint file),
``"hf:ORG/NAME"`` or a local Hugging Face model folder (transformers CLIP/SigLIP), an open_clip
model, a ``(model, tokenizer)`` pair, a :class:`~ovseg.scoring.backends.ClipBackend`,
``"tiny-random"`` (open_clip) or ``"hf-tiny-random"`` (transformers). Pretrained CLIP
weights are read from their caches only (see :mod:`ovseg.models.clip_weights`): missing ones
fail at once with the command that fetches them.

``random_weights=True`` builds a registered architecture (``sam="vit_b"``, ``clip="ViT-B-16"``)
with random weights, for timing only: it warns, and its labels are meaningless.

Precision: :func:`resolve_dtype` reads ``"float32" | "bfloat16" | "float16"`` (also ``"fp32"``,
``"bf16"``, ``"fp16"``, ``"half"``, or a ``torch.dtype``), and :func:`inference_precision` is
the context ovseg's models run in for it: ``torch.autocast`` in that dtype (matrix products,
convolutions and attention in half precision; norms, softmaxes and ovseg's region scores in
float32), nothing for float32. The weights stay float32, so every input path keeps working.
:func:`compile_modules` compiles the modules whose ``forward`` ovseg calls (opt-in).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from ovseg.constants import HF_TINY, TINY
from ovseg.models._device import RANDOM_WARNING as _RANDOM_WARNING
from ovseg.models._device import resolve_device
from ovseg.models.sam2_weights import SAM2_ARCHS, build_sam2, check_sam2_spec, is_sam2_spec
from ovseg.models.sam3_weights import SAM3, SAM3_TINY, build_sam3, check_sam3_spec, is_sam3_spec
from ovseg.scoring.backends import ClipBackend, HFClipBackend, OpenClipBackend

_SAM_WIDTH_TO_ARCH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def resolve_dtype(dtype, device=None) -> torch.dtype:
    """``None`` (float32), a name of :data:`DTYPES` or an alias (``fp32``, ``bf16``, ``fp16``,
    ``half``), or one of those three ``torch.dtype`` -> the ``torch.dtype``.

    Raises:
        ValueError: another value, or float16 on a CPU ``device`` (PyTorch's CPU kernels are
            slow or missing in float16; bfloat16 runs there).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype if dtype in DTYPES.values() else None
    elif isinstance(dtype, str):
        resolved = DTYPES.get(_DTYPE_ALIASES.get(dtype.lower(), dtype.lower()))
    else:
        resolved = None
    if resolved is None:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or fp32, bf16, fp16, half), "
                         f"got {dtype!r}")  # fmt: skip
    if resolved == torch.float16 and device is not None and resolve_device(device).type == "cpu":
        raise ValueError("float16 needs a CUDA device (slow or unsupported on the CPU); use "
                         "bfloat16 or float32 there")  # fmt: skip
    return resolved


def inference_precision(device, dtype=None) -> contextlib.AbstractContextManager:
    """The context to run ovseg's models in for ``dtype`` (see :func:`resolve_dtype`) on
    ``device``: ``torch.autocast(device type, dtype)`` for bfloat16 and float16, a no-op for
    float32. Use it around ``Segmenter`` calls (``set_image``, ``propose``, ``segment``...)."""
    dtype = resolve_dtype(dtype, device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(resolve_device(device).type, dtype=dtype)


def compile_modules(*models, **options) -> list[str]:
    """``torch.compile`` (in place, ``nn.Module.compile(**options)``) the modules of ``models``
    whose ``forward`` ovseg calls: SAM's image encoder, SAM 2's vision encoder, each block of an
    open_clip ViT (the dense methods run the blocks one by one), and each block's MLP of a DINO
    ViT (its blocks run through :func:`ovseg.methods.dino.dino_block`). Accepts SAM
    and SAM 2 models, :class:`ClipBackend` objects, open_clip models and DINO ViTs; returns the
    names of what was compiled. Opt-in: the first call per input shape pays the compilation.
    """
    names = []

    def compile_(module, name):
        module.compile(**options)
        names.append(name)

    for model in models:
        model = getattr(model, "model", model)  # a ClipBackend
        if hasattr(model, "image_encoder"):
            compile_(model.image_encoder, "sam.image_encoder")
        elif hasattr(model, "vision_encoder"):
            compile_(model.vision_encoder, "sam2.vision_encoder")
        elif hasattr(getattr(model, "visual", None), "transformer"):
            for i, block in enumerate(model.visual.transformer.resblocks):
                compile_(block, f"clip.visual.transformer.resblocks.{i}")
        elif hasattr(model, "blocks") and hasattr(model, "patch_embed"):
            for i, block in enumerate(model.blocks):
                compile_(block.mlp, f"dino.blocks.{i}.mlp")
        else:
            raise TypeError(f"compile_modules: no known encoder in {type(model).__name__}")
    return names


def sam_names() -> list[str]:
    from ovseg.models.weights import SAM_CHECKPOINTS

    return [TINY, *SAM_CHECKPOINTS, *SAM2_ARCHS, SAM3, SAM3_TINY]


def sam_family(spec) -> str | None:
    """``"sam1"``, ``"sam2"`` or ``"sam3"``: the SAM family a spec names (None for None)."""
    if spec is None:
        return None
    return "sam3" if is_sam3_spec(spec) else "sam2" if is_sam2_spec(spec) else "sam1"


def check_sam_spec(spec) -> None:
    """Raise at once for a SAM spec :func:`build_sam` could never build (wrong type, unknown
    name, a checkpoint path that does not exist), without loading anything."""
    from ovseg.models import weights

    if spec is None or isinstance(spec, torch.nn.Module):
        return
    if is_sam3_spec(spec):
        return check_sam3_spec(spec)
    if is_sam2_spec(spec):
        return check_sam2_spec(spec)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"sam must be a name, a checkpoint path or a Sam model, got {type(spec)}")
    if spec == TINY or spec in weights.SAM_CHECKPOINTS:
        return
    if Path(spec).suffix in (".pth", ".pt", ".safetensors", ".bin") or Path(spec).exists():
        if not Path(spec).expanduser().is_file():
            raise FileNotFoundError(f"SAM checkpoint not found: {Path(spec).expanduser()}")
        return
    raise ValueError(
        f"unknown SAM model {spec!r}; known names: {', '.join(sam_names())}, "
        "or a path to a SAM checkpoint file"
    )


def build_sam(spec, device=None, *, random_weights: bool = False):
    """Return a ``segment_anything.modeling.Sam`` (or, for a SAM 2 spec, a ``transformers``
    ``Sam2Model``; for a SAM 3 spec, a :class:`~ovseg.proposals.sam3.Sam3Bundle`) in eval
    mode on ``device``."""
    from segment_anything import sam_model_registry
    from segment_anything.modeling import Sam

    from ovseg.models import weights

    device = resolve_device(device)
    if is_sam3_spec(spec):
        return build_sam3(spec, device, random_weights=random_weights)
    if is_sam2_spec(spec):
        return build_sam2(spec, device, random_weights=random_weights)
    if isinstance(spec, Sam):
        return spec.eval().to(device)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"sam must be a name, a checkpoint path or a Sam model, got {type(spec)}")
    if spec == TINY:
        from ovseg.models.tiny import tiny_sam

        return tiny_sam().to(device)
    if spec in weights.SAM_CHECKPOINTS:
        arch = weights.SAM_CHECKPOINTS[spec].arch
        if random_weights:
            warnings.warn(_RANDOM_WARNING.format(what=f"SAM {spec}"), UserWarning, stacklevel=2)
            return sam_model_registry[arch]().eval().to(device)
        path = weights.ensure_checkpoint(spec)
        return _sam_from_state(weights.load_state_dict(path), path).to(device)
    if Path(spec).suffix in (".pth", ".pt", ".safetensors", ".bin") or Path(spec).exists():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"SAM checkpoint not found: {path}")
        return _sam_from_state(weights.load_state_dict(path), path).to(device)
    raise ValueError(
        f"unknown SAM model {spec!r}; known names: {', '.join(sam_names())}, "
        "or a path to a SAM checkpoint file"
    )


def _sam_from_state(state: dict, path: Path):
    from segment_anything import sam_model_registry

    key = "image_encoder.patch_embed.proj.weight"
    if key not in state:
        raise ValueError(f"{path} is not a SAM checkpoint (no {key})")
    width = int(state[key].shape[0])
    if width not in _SAM_WIDTH_TO_ARCH:
        raise ValueError(f"{path}: unknown SAM encoder width {width}")
    sam = sam_model_registry[_SAM_WIDTH_TO_ARCH[width]]()
    sam.load_state_dict(state)
    return sam.eval()


def build_clip(spec, device=None, *, random_weights: bool = False) -> ClipBackend:
    """Return a :class:`ClipBackend` on ``device`` (see the module docstring for ``spec``)."""
    device = resolve_device(device)
    if isinstance(spec, ClipBackend):
        spec.model.to(device)
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        model, tokenizer = spec
        return _wrap_model(model, tokenizer, type(model).__name__, device)
    if isinstance(spec, torch.nn.Module):
        return _wrap_model(spec, None, type(spec).__name__, device)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"clip must be a name, a path or a model, got {spec!r}")
    if spec == TINY:
        from ovseg.models.tiny import tiny_clip

        return OpenClipBackend(tiny_clip().to(device), name=TINY)
    if spec == HF_TINY:
        from ovseg.models.tiny import tiny_hf_clip

        model, tokenizer = tiny_hf_clip()
        return HFClipBackend(model.to(device), tokenizer, name=HF_TINY)
    if spec.startswith("hf:") or (Path(spec).is_dir() and (Path(spec) / "config.json").exists()):
        return _hf_clip(spec.removeprefix("hf:"), device, random_weights)
    return _open_clip(spec, device, random_weights)


def _wrap_model(model, tokenizer, name, device) -> ClipBackend:
    if hasattr(model, "get_image_features"):
        if tokenizer is None:
            raise ValueError("a transformers model needs its tokenizer: pass (model, tokenizer)")
        return HFClipBackend(model.to(device), tokenizer, name=name)
    if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
        return OpenClipBackend(model.to(device), tokenizer, name=name)
    raise TypeError(f"{name} is neither an open_clip nor a transformers CLIP model")


def _open_clip(spec: str, device, random_weights: bool) -> ClipBackend:
    import open_clip

    from ovseg.models.clip_weights import open_clip_pretrained

    arch, sep, tag = spec.partition(":") if ":" in spec else spec.partition("/")
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown CLIP model {spec!r}: {arch!r} is not an open_clip architecture "
            f"(e.g. ViT-B-16, ViT-L-14; `open_clip.list_models()` lists them), and "
            f"names for other backends are {TINY!r}, {HF_TINY!r}, 'hf:ORG/NAME'"
        )
    if random_weights:
        warnings.warn(_RANDOM_WARNING.format(what=f"CLIP {arch}"), UserWarning, stacklevel=3)
        model = open_clip.create_model(arch, pretrained=None, device=device)
        return OpenClipBackend(model, open_clip.get_tokenizer(arch), name=f"{arch}/random")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tag:
        raise ValueError(
            f"CLIP {arch!r} needs pretrained weights: name one as "
            f"'{arch}/TAG' with TAG in {tags}, or 'ARCH:PATH' for a local file, "
            "or pass random_weights=True for timing"
        )
    if sep == ":":
        if not Path(tag).expanduser().is_file():
            raise FileNotFoundError(f"CLIP checkpoint not found: {tag}")
    elif tag not in tags:
        raise ValueError(f"unknown pretrained tag {tag!r} for {arch}; known: {tags}")
    if sep == ":":
        from ovseg.models.weights import reason

        file = str(Path(tag).expanduser())
        try:  # open_clip reads with weights_only=True (or safetensors): no pickled code runs
            model = open_clip.create_model(arch, pretrained=file, device=device)
        except Exception as e:  # the loaders raise many types on a wrong file; all mean "wrong"
            raise ValueError(
                f"CLIP checkpoint {file} does not load into {arch} ({reason(e)}); expected an "
                "open_clip state dict of that architecture: .pt/.pth/.bin saved by torch.save, "
                ".safetensors, or big_vision .npz for SigLIP"
            ) from e
    else:
        model = open_clip_pretrained(arch, tag, device)  # from the cache only, never online
    return OpenClipBackend(model, open_clip.get_tokenizer(arch), name=spec)


def _hf_clip(model_id: str, device, random_weights: bool) -> ClipBackend:
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from ovseg.models.clip_weights import hf_missing

    if random_weights:
        raise ValueError("random_weights is supported for open_clip architectures only")
    try:  # the local folder or the Hugging Face cache only: `ovseg weights download` fetches
        model = AutoModel.from_pretrained(model_id, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(model_id, local_files_only=True)
    except OSError as e:
        raise FileNotFoundError(hf_missing(model_id, e)) from e
    return HFClipBackend(
        model.to(device), tokenizer, name=f"hf:{model_id}", image_processor=processor
    )


def dino_names() -> list[str]:
    from ovseg.models.weights import DINO_CHECKPOINTS

    return [TINY, *DINO_CHECKPOINTS]


def build_dino(spec, device=None, *, random_weights: bool = False):
    """Return a DINO ViT (timm ``VisionTransformer``) in eval mode on ``device``, or None.

    ``spec``: ``None``; a registry name (``"dino_vitb8"``, ``"dino_vitb16"``, ``"dino_vits8"``,
    ``"dino_vits16"``: the official backbone checkpoints from the weights folder);
    ``"NAME:/path.pth"`` (an official-format DINO state dict of architecture NAME); a built
    module; or ``"tiny-random"`` (a tiny random ViT with patch 8, for tests).
    """
    from ovseg.methods import dino as dino_arch
    from ovseg.models import weights

    device = resolve_device(device)
    if spec is None:
        return None
    if isinstance(spec, torch.nn.Module):
        return spec.eval().to(device)
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"dino must be a name, 'NAME:/path.pth' or a model, got {spec!r}")
    if spec == TINY:
        return dino_arch.tiny_dino(patch_size=8).to(device)
    name, sep, path = spec.partition(":")
    if name not in weights.DINO_CHECKPOINTS:
        raise ValueError(
            f"unknown DINO model {spec!r}; known names: {', '.join(dino_names())}, or "
            "'NAME:/path.pth' with NAME one of those"
        )
    if sep:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"DINO checkpoint not found: {file}")
    elif random_weights:
        warnings.warn(_RANDOM_WARNING.format(what=f"DINO {name}"), UserWarning, stacklevel=2)
        return dino_arch.build_dino(name).to(device)
    else:
        file = weights.ensure_checkpoint(name)
    state = weights.load_state_dict(file)
    return dino_arch.build_dino(name, state).to(device)
