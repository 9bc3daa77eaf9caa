"""Build SAM and CLIP from a registry name, a checkpoint path, or an already built model.

SAM specs: ``"vit_b" | "vit_l" | "vit_h"`` (official checkpoints from the weights cache), a
path to a SAM ``.pth``/``.safetensors`` file (architecture read from the weights), a
``segment_anything.modeling.Sam``, or ``"tiny-random"``; SAM 2 specs (``"sam2.1_hiera_tiny"``,
``"NAME:/path.pt"``, ``"facebook/sam2.1-hiera-tiny"``, a ``transformers`` ``Sam2Model``,
``"sam2-tiny-random"``) go to :func:`ovseg.models.sam2_weights.build_sam2`.

CLIP specs: ``"ARCH/TAG"`` (an open_clip architecture and pretrained tag, e.g.
``"ViT-B-16/openai"``), ``"ARCH:PATH"`` (open_clip architecture, local checkpoint file),
``"hf:ORG/NAME"`` or a local Hugging Face model folder (transformers CLIP/SigLIP), an open_clip
model, a ``(model, tokenizer)`` pair, a :class:`~ovseg.scoring.backends.ClipBackend`,
``"tiny-random"`` (open_clip) or ``"hf-tiny-random"`` (transformers). Pretrained CLIP
weights are read from their caches only (see :mod:`ovseg.models.clip_weights`): missing ones
fail at once with the command that fetches them.

``random_weights=True`` builds a registered architecture (``sam="vit_b"``, ``clip="ViT-B-16"``)
with random weights, for timing only: it warns, and its labels are meaningless.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ovseg.constants import HF_TINY, TINY
from ovseg.models._device import RANDOM_WARNING as _RANDOM_WARNING
from ovseg.models._device import resolve_device
from ovseg.models.sam2_weights import SAM2_ARCHS, build_sam2, check_sam2_spec, is_sam2_spec
from ovseg.scoring.backends import ClipBackend, HFClipBackend, OpenClipBackend

_SAM_WIDTH_TO_ARCH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def sam_names() -> list[str]:
    from ovseg.models.weights import SAM_CHECKPOINTS

    return [TINY, *SAM_CHECKPOINTS, *SAM2_ARCHS]


def check_sam_spec(spec) -> None:
    """Raise at once for a SAM spec :func:`build_sam` could never build (wrong type, unknown
    name, a checkpoint path that does not exist), without loading anything."""
    from ovseg.models import weights

    if spec is None or isinstance(spec, torch.nn.Module):
        return
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
    ``Sam2Model``) in eval mode on ``device``."""
    from segment_anything import sam_model_registry
    from segment_anything.modeling import Sam

    from ovseg.models import weights

    device = resolve_device(device)
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
