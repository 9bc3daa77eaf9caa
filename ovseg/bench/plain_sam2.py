"""The plain side of ``ovseg bench --sam sam2.1_hiera_*``: Meta's own ``sam2`` package.

"Plain" SAM 2 is what users write with Meta's package: ``SAM2AutomaticMaskGenerator`` for the
automatic masks and ``SAM2ImagePredictor`` for a click, on Meta's ``SAM2Base``. ovseg's side runs
``transformers``' ``Sam2Model`` holding the same weights (converted from the Meta model's state
dict), so both sides compute the same masks from the same numbers.

Meta's package is optional (its build compiles CUDA code by default); install it with
``SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ovseg.bench.plain import PlainPipeline
from ovseg.constants import SAM2_TINY
from ovseg.models.sam2_weights import SAM2_ARCHS, Sam2Arch, from_meta_state_dict

_SIZE_SUFFIX = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
INSTALL = "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2"


def meta_config(name: str) -> tuple[str, list[str]]:
    """Meta's config file and the hydra overrides that give architecture ``name``."""
    if name not in SAM2_ARCHS:
        raise ValueError(f"unknown SAM 2 architecture {name!r}; known: {', '.join(SAM2_ARCHS)}")
    if name == SAM2_TINY:
        return "configs/sam2.1/sam2.1_hiera_t.yaml", meta_overrides(SAM2_ARCHS[name])
    version, _, size = name.partition("_hiera_")
    return f"configs/{version}/{version}_hiera_{_SIZE_SUFFIX[size]}.yaml", []


def meta_overrides(arch: Sam2Arch) -> list[str]:
    """Hydra overrides of Meta's hiera-tiny config for an architecture of other sizes."""

    def seq(values) -> str:
        return "[" + ",".join(str(v) for v in values) + "]"

    dims = [arch.embed_dim * 2**i for i in range(len(arch.stages))]
    trunk, neck, memory = "model.image_encoder.trunk", "model.image_encoder.neck", "model.memory"
    return [
        f"++model.image_size={arch.image_size}",
        f"++{trunk}.embed_dim={arch.embed_dim}",
        f"++{trunk}.num_heads={arch.num_heads}",
        f"++{trunk}.stages={seq(arch.stages)}",
        f"++{trunk}.global_att_blocks={seq(arch.global_att_blocks)}",
        f"++{trunk}.window_pos_embed_bkg_spatial_size={seq(arch.window_pos_embed_bkg)}",
        f"++{trunk}.window_spec={seq(arch.window_spec)}",
        f"++{neck}.backbone_channel_list={seq(dims[::-1])}",
        f"++{neck}.d_model={arch.hidden}",
        f"++{neck}.position_encoding.num_pos_feats={arch.hidden}",
        f"++{memory}_attention.d_model={arch.hidden}",
        f"++{memory}_attention.layer.d_model={arch.hidden}",
        f"++{memory}_attention.layer.self_attention.embedding_dim={arch.hidden}",
        f"++{memory}_attention.layer.cross_attention.embedding_dim={arch.hidden}",
        f"++{memory}_encoder.in_dim={arch.hidden}",
        f"++{memory}_encoder.mask_downsampler.embed_dim={arch.hidden}",
        f"++{memory}_encoder.fuser.layer.dim={arch.hidden}",
    ]


def build_pair(spec: str, device, *, random_weights: bool):
    """(Meta's ``SAM2Base``, ovseg's ``Sam2Model``) with the same weights, on ``device``.

    ``spec``: a SAM 2 registry name (its checkpoint, or random weights with
    ``random_weights``), ``"NAME:/path.pt"``, or ``"sam2-tiny-random"``.
    """
    try:
        from sam2.build_sam import build_sam2 as meta_build
    except ImportError as e:
        raise ImportError(
            f"the plain SAM 2 side of ovseg bench is Meta's sam2 package; install it: {INSTALL}"
        ) from e
    from ovseg.models import weights

    if not isinstance(spec, str) or spec.partition(":")[0] not in SAM2_ARCHS:
        raise ValueError(
            f"ovseg bench runs SAM 2 from a registry name or 'NAME:/path.pt', got {spec!r}"
        )
    name, sep, path = spec.partition(":")
    config, overrides = meta_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        meta = meta_build(config, None, device="cpu", hydra_overrides_extra=overrides)
    state = None
    if sep:
        state = weights.load_state_dict(path)
    elif name != SAM2_TINY and not random_weights:
        state = weights.load_state_dict(weights.ensure_checkpoint(name))
    elif name != SAM2_TINY:
        warnings.warn(f"ovseg bench: SAM 2 {name} with RANDOM weights", UserWarning, stacklevel=2)
    if state is not None:
        meta.load_state_dict(state)
    ours = from_meta_state_dict(name, meta.state_dict(), spec)
    return meta.eval().to(device), ours.to(device)


@dataclass
class PlainSam2Pipeline(PlainPipeline):
    """:class:`~ovseg.bench.plain.PlainPipeline` with Meta's SAM 2 generator and predictor;
    ``sam`` is Meta's ``SAM2Base``, ``grid`` keyword options of
    ``SAM2AutomaticMaskGenerator``."""

    def _sam_tools(self):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        generator = SAM2AutomaticMaskGenerator(self.sam, output_mode="binary_mask", **self.grid)
        predictor = SAM2ImagePredictor(self.sam)
        side = self.sam.image_size  # the predictor's feature sizes are written for 1024 inputs
        sizes = [(side // s, side // s) for s in (4, 8, 16)]
        generator.predictor._bb_feat_sizes = predictor._bb_feat_sizes = sizes
        return generator, predictor
