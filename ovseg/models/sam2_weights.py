"""SAM 2 on ``transformers``: the configurations of the official sizes, the conversion of Meta's
checkpoints to ``transformers``' layout, and the builder.

ovseg runs SAM 2 with ``transformers.Sam2Model`` (images) and ``Sam2VideoModel`` (video): pure
PyTorch, nothing to compile. Meta publishes its checkpoints as ``{"model": state_dict}`` in the
layout of its own ``sam2`` package (``image_encoder.trunk...``, ``sam_mask_decoder...``);
:func:`convert_meta_state_dict` renames those keys to ``transformers``' names, the same
weights, so an official file loads into either model.

Specs for :func:`build_sam2`:

- ``"sam2.1_hiera_tiny" | "sam2.1_hiera_small" | "sam2.1_hiera_base_plus" |
  "sam2.1_hiera_large"`` and the 2.0 names ``"sam2_hiera_*"``: the official checkpoint from the
  weights folder (``ovseg weights download NAME`` fetches it);
- ``"NAME:/path.pt"``: a Meta-format checkpoint file of architecture NAME (any name above, or
  ``"sam2-tiny-random"``);
- ``"facebook/sam2.1-hiera-tiny"`` (any ``ORG/NAME`` id): a ``transformers`` checkpoint from the
  Hugging Face cache, offline;
- a built ``Sam2Model`` / ``Sam2VideoModel``;
- ``"sam2-tiny-random"``: a tiny random model of the real classes (256x256 input), for tests.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ovseg.constants import SAM2_TINY
from ovseg.proposals.sam2 import is_sam2_model

__all__ = [
    "SAM2_ARCHS",
    "Sam2Arch",
    "build_sam2",
    "convert_meta_state_dict",
    "from_meta_state_dict",
    "is_sam2_model",
    "is_sam2_spec",
    "sam2_config",
]


@dataclass(frozen=True)
class Sam2Arch:
    """Hyperparameters of one SAM 2 image encoder (Hiera trunk), as in Meta's configs.

    ``version`` 2.1 adds the occlusion embedding and the temporal encoding of object pointers
    (video side only: the image path is the same in both versions).
    """

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_pos_embed_bkg: tuple[int, int]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    version: str = "2.1"
    image_size: int = 1024
    hidden: int = 256  # width of the neck, prompt encoder, mask decoder and memory attention
    memory: int = 64  # channels of the memory encoder's output (transformers fixes it at 64)


_SIZES = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                 window_pos_embed_bkg=(7, 7)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                  window_pos_embed_bkg=(7, 7)),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3),
                      global_att_blocks=(12, 16, 20), window_pos_embed_bkg=(14, 14)),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4),
                  global_att_blocks=(23, 33, 43), window_pos_embed_bkg=(7, 7),
                  window_spec=(8, 4, 16, 8)),
}  # fmt: skip

SAM2_ARCHS: dict[str, Sam2Arch] = {
    f"{prefix}_hiera_{size}": Sam2Arch(**params, version=version)
    for prefix, version in (("sam2.1", "2.1"), ("sam2", "2.0"))
    for size, params in _SIZES.items()
}
"""The eight official architectures (2.1 and 2.0, four sizes each)."""

SAM2_ARCHS[SAM2_TINY] = Sam2Arch(
    embed_dim=16,
    num_heads=1,
    stages=(1, 2, 1, 1),
    global_att_blocks=(2,),
    window_pos_embed_bkg=(4, 4),
    window_spec=(8, 4, 4, 4),
    image_size=256,
    hidden=128,  # transformers' video model needs it wider than the memory (64)
)


def sam2_config(name: str, *, video: bool = False):
    """The ``transformers`` config (``Sam2Config`` or ``Sam2VideoConfig``) of architecture
    ``name`` (a key of :data:`SAM2_ARCHS`)."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

    if name not in SAM2_ARCHS:
        raise ValueError(f"unknown SAM 2 architecture {name!r}; known: {', '.join(SAM2_ARCHS)}")
    a = SAM2_ARCHS[name]
    dims = [a.embed_dim * 2**i for i in range(len(a.stages))]
    heads = [a.num_heads * 2**i for i in range(len(a.stages))]
    side = a.image_size
    backbone = Sam2HieraDetConfig(
        hidden_size=a.embed_dim,
        num_attention_heads=a.num_heads,
        image_size=[side, side],
        blocks_per_stage=list(a.stages),
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=heads,
        window_size_per_stage=list(a.window_spec),
        global_attention_blocks=list(a.global_att_blocks),
        window_positional_embedding_background_size=list(a.window_pos_embed_bkg),
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=dims[::-1],
        backbone_feature_sizes=[[side // s, side // s] for s in (4, 8, 16)],
        fpn_hidden_size=a.hidden,
    )
    prompt = dict(image_size=side, patch_size=16, hidden_size=a.hidden)
    decoder = dict(hidden_size=a.hidden)
    if not video:
        return Sam2Config(
            vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
        )
    v21 = a.version == "2.1"
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=prompt,
        mask_decoder_config=decoder,
        memory_attention_hidden_size=a.hidden,
        memory_encoder_hidden_size=a.hidden,
        memory_encoder_output_channels=a.memory,
        mask_downsampler_embed_dim=a.hidden,
        memory_fuser_embed_dim=a.hidden,
        memory_fuser_intermediate_dim=4 * a.hidden,
        image_size=side,
        memory_attention_rope_feat_sizes=[side // 16, side // 16],
        enable_temporal_pos_encoding_for_object_pointers=v21,
        enable_occlusion_spatial_embedding=v21,
    )


# Meta's names -> transformers' names, applied in order to each key (after the MLP renaming).
_RENAMES = [
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.gamma$", ".scale"),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.norm(\d?)\.", r".layer_norm\1."),
]
_MLP = re.compile(
    r"^(.*(?:\.mlp|iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+"
    r"|^obj_ptr_proj))\.layers\.(\d+)\.(weight|bias)$"
)
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)$")
_VIDEO_ONLY = (
    "memory_attention.",
    "memory_encoder.",
    "memory_temporal_positional_encoding",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "occlusion_spatial_embedding_parameter",
    "temporal_positional_encoding_projection_layer.",
    "object_pointer_proj.",
    "mask_downsample.",
)


def convert_meta_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta ``sam2`` state dict -> ``transformers`` ``Sam2VideoModel`` state dict (same tensors).

    MLPs (``layers.0 .. layers.n``) become ``proj_in``, ``layers.0 .. layers.n-2``, ``proj_out``;
    the memory encoder's mask downsampler (``encoder.{3k, 3k+1}``, last conv) becomes
    ``layers.k.conv``, ``layers.k.layer_norm``, ``final_conv``; the four point embeddings become
    one ``point_embed`` table; other keys are renamed module by module (see ``_RENAMES``).
    """
    mlp_depth: dict[str, int] = {}
    downsampler_last = -1
    for key in state:
        if m := _MLP.match(key):
            mlp_depth[m[1]] = max(mlp_depth.get(m[1], 0), int(m[2]) + 1)
        if m := _DOWNSAMPLER.match(key):
            downsampler_last = max(downsampler_last, int(m[1]))
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        if m := _MLP.match(key):
            i, n = int(m[2]), mlp_depth[m[1]]
            layer = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
            key = f"{m[1]}.{layer}.{m[3]}"
        elif m := _DOWNSAMPLER.match(key):
            i = int(m[1])
            layer = (
                "final_conv"
                if i == downsampler_last
                else f"layers.{i // 3}.{'conv' if i % 3 == 0 else 'layer_norm'}"
            )
            key = f"memory_encoder.mask_downsampler.{layer}.{m[2]}"
        elif m := re.match(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", key):
            points[int(m[1])] = value
            continue
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    if points:
        out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    pe = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if pe is not None:
        out["shared_image_embedding.positional_embedding"] = pe
    return out


def is_sam2_spec(spec) -> bool:
    """Whether ``spec`` names a SAM 2 model for :func:`build_sam2` (no I/O, no validation of
    files); the SAM 1 builder handles everything else."""
    if is_sam2_model(spec):
        return True
    if not isinstance(spec, str):
        return False
    name = spec.partition(":")[0]
    return name in SAM2_ARCHS or _is_hub_id(spec)


def _is_hub_id(spec: str) -> bool:
    if Path(spec).suffix in (".pt", ".pth", ".safetensors", ".bin"):
        return False
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]*sam2[\w.-]*", spec, re.IGNORECASE))


def check_sam2_spec(spec) -> None:
    """Raise at once for a SAM 2 spec that could never load (missing file), without loading."""
    if isinstance(spec, str) and ":" in spec:
        _, _, path = spec.partition(":")
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"SAM 2 checkpoint not found: {file}")


def build_sam2(spec, device=None, *, video: bool = False, random_weights: bool = False):
    """Return a ``transformers`` ``Sam2Model`` (or ``Sam2VideoModel`` with ``video=True``) in
    eval mode on ``device`` (see the module docstring for ``spec``).

    Raises:
        ValueError: unknown name; a file that is not a SAM 2 checkpoint or whose weights do not
            fit the architecture (the missing and unexpected keys are named).
        FileNotFoundError: a checkpoint file, a registry checkpoint or a hub id not on disk.
    """
    from ovseg.models import weights
    from ovseg.models._device import RANDOM_WARNING as _RANDOM_WARNING
    from ovseg.models._device import resolve_device

    device = resolve_device(device)
    if is_sam2_model(spec):
        if video and type(spec).__name__ != "Sam2VideoModel":
            raise TypeError("video=True needs a Sam2VideoModel, got a Sam2Model")
        return spec.eval().to(device)
    if not isinstance(spec, str):
        raise TypeError(f"sam must be a name, 'NAME:/path.pt', a hub id or a model, got {spec!r}")
    name, sep, path = spec.partition(":")
    if name in SAM2_ARCHS:
        if sep:
            file = Path(path).expanduser()
            if not file.is_file():
                raise FileNotFoundError(f"SAM 2 checkpoint not found: {file}")
            return from_meta_state_dict(name, weights.load_state_dict(file), file, video).to(device)
        if name == SAM2_TINY:
            return _random(name, video, seed=0).to(device)
        if random_weights:
            warnings.warn(_RANDOM_WARNING.format(what=f"SAM 2 {name}"), UserWarning, stacklevel=2)
            return _random(name, video, seed=None).to(device)
        file = weights.ensure_checkpoint(name)
        return from_meta_state_dict(name, weights.load_state_dict(file), file, video).to(device)
    if _is_hub_id(spec):
        return _from_hub(spec, video).to(device)
    known = ", ".join(SAM2_ARCHS)
    raise ValueError(
        f"unknown SAM 2 model {spec!r}; known names: {known}; or 'NAME:/path.pt' for a Meta "
        "checkpoint file of one of those, or a Hugging Face id such as facebook/sam2.1-hiera-tiny"
    )


def _model_class(video: bool):
    from transformers import Sam2Model, Sam2VideoModel

    return Sam2VideoModel if video else Sam2Model


def _random(name: str, video: bool, seed: int | None):
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = _model_class(video)(sam2_config(name, video=video))
    return model.eval()


def from_meta_state_dict(name: str, state: dict, source="state dict", video: bool = False):
    """A ``Sam2Model`` (``Sam2VideoModel`` with ``video``) of architecture ``name`` holding the
    weights of a Meta-format state dict; ValueError naming the missing, unexpected and
    mis-shaped keys when they do not fit (``source`` names the weights in messages)."""
    if not any(k.startswith(("image_encoder.trunk.", "sam_mask_decoder.")) for k in state):
        raise ValueError(
            f"{source} is not a Meta SAM 2 checkpoint (no image_encoder.trunk.* or "
            "sam_mask_decoder.* keys); Hugging Face SAM 2 models load by their hub id instead"
        )
    converted = convert_meta_state_dict(state)
    if not video:
        converted = {k: v for k, v in converted.items() if not k.startswith(_VIDEO_ONLY)}
    model = _model_class(video)(sam2_config(name, video=video))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(
        f"{k} {tuple(converted[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(converted)
        if converted[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source} does not fit SAM 2 architecture {name!r} (is it another size?): "
            + "; ".join(
                f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for label, keys in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("shape mismatches", wrong),
                )
                if keys
            )
        )
    model.load_state_dict(converted)
    return model.eval()


def _from_hub(model_id: str, video: bool):
    from ovseg.models.clip_weights import hf_missing

    try:
        return _model_class(video).from_pretrained(model_id, local_files_only=True).eval()
    except OSError as e:
        raise FileNotFoundError(hf_missing(model_id, e)) from e
