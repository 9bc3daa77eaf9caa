"""RADIO checkpoints: read NVIDIA's published files without executing pickled code, map their
keys onto :class:`ovseg.methods.radio.RadioEncoder`, and build RADIO models from specs.

Two published layouts are read:

- RADIO's training checkpoints (``*.pth.tar``, the ``torch.hub`` files: ``radio_v2.5-l``,
  ``c-radio_v3-l``...): ``{"args": argparse.Namespace, "state_dict": ..., ["state_dict_ema"]}``
  with keys ``base_model.*`` (the ViT), ``input_conditioner.*``, ``_feature_normalizer.*`` and
  teacher heads. They are loaded with ``torch.load(weights_only=True)`` allowing
  ``argparse.Namespace`` and nothing else; a file that needs any other class is refused.
  ``args`` gives the number of summary tokens (distinct teacher names) and ``summary_idxs`` as
  RADIO's ``hubconf.radio_model`` computes them; ``state_dict_ema`` is used when present.
- The Hugging Face repos' ``model.safetensors`` (remote-code layout): ``radio_model.model.*``,
  ``radio_model.input_conditioner.*``, ``radio_model.summary_idxs``...

Mapping (both): ``base_model.`` / ``radio_model.model.`` -> ``model.``; ``_feature_normalizer.``
-> ``feature_normalizer.``; LayerScale ``.grandma`` -> ``.gamma``; DAMP's identity
reparametrisation ``X.parametrizations.weight.original`` -> ``X.weight``; dropped: teacher
heads and adaptors, the intermediate-feature normaliser and timm's unused ``reg_token``.
Whether the model has LayerScale, a final norm or a feature normaliser, and how many registers,
is read from the file; sizes come from the named architecture, and a file that does not fit
raises ValueError naming the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import argparse
import re
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from ovseg.methods.radio import RADIO_ARCHS, RADIO_TINY, RadioArch, RadioEncoder

__all__ = ["build_radio", "convert_radio_state_dict", "load_radio_file", "radio_from_state_dict"]

_DROP = ("adaptors.", "inter_feature_normalizer.", "model.reg_token")
_DAMP = re.compile(r"^(.*)\.parametrizations\.weight\.original$")


def load_radio_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a RADIO checkpoint (``.pth.tar`` or ``.safetensors``) on the CPU.

    Returns ``(state, meta)``: the raw state dict and what ``args`` says (``num_cls_tokens``,
    ``summary_idxs``; for safetensors, from the ``config.json`` beside it, if any). Raises
    FileNotFoundError, or ValueError for a file that is unreadable, needs classes other than
    ``argparse.Namespace`` to unpickle, or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"RADIO checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from ovseg.models.weights import load_state_dict

        return load_state_dict(path), _hf_meta(path.parent / "config.json")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            chk = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler raises many types; all mean "refused"
        raise ValueError(
            f"cannot load RADIO checkpoint {path} with weights_only=True (only "
            f"argparse.Namespace is allowed besides tensors): {e}"
        ) from e
    if not isinstance(chk, dict):
        raise ValueError(f"{path} does not hold a RADIO checkpoint (a dict), got {type(chk)}")
    state = chk.get("state_dict_ema", chk.get("state_dict", chk))
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    return state, _meta(chk.get("args"))


def _hf_meta(config: Path) -> dict:
    """``_meta`` of the training ``args`` a Hugging Face repo keeps in its ``config.json``."""
    import json

    try:
        args = json.loads(config.read_text()).get("args") if config.is_file() else None
    except (OSError, ValueError, AttributeError):
        return {}
    return _meta(argparse.Namespace(**args)) if isinstance(args, dict) else {}


def _meta(args) -> dict:
    """Summary tokens and indices from RADIO's training ``args``, as ``hubconf`` derives them."""
    teachers = getattr(args, "teachers", None)
    if not teachers:
        return {}
    if not getattr(args, "cls_token_per_teacher", True):
        return {"num_cls_tokens": 1, "summary_idxs": [0]}
    first: dict[str, int] = {}
    for i, t in enumerate(teachers):
        if t.get("use_summary", True):
            first.setdefault(t["name"], i)
    return {
        "num_cls_tokens": len({t["name"] for t in teachers}),
        "summary_idxs": sorted(first.values()),
    }


def convert_radio_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A RADIO state dict (training checkpoint, Hugging Face or ovseg layout) -> the key layout
    of :class:`RadioEncoder` (same tensors; see the module docstring).

    Raises ValueError for a state dict with reparametrised weights other than DAMP's identity
    (spectral reparametrisation must be realised by RADIO's own loader first).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("base_model."):
            key = "model." + key.removeprefix("base_model.")
        elif key.startswith("radio_model."):
            key = key.removeprefix("radio_model.")
        elif key.startswith("_feature_normalizer."):
            key = "feature_normalizer." + key.removeprefix("_feature_normalizer.")
        elif not key.startswith(("model.", "input_conditioner.", "feature_normalizer.")):
            if key != "summary_idxs":
                continue  # teacher heads, projections, loss state...
        if key.startswith(_DROP):
            continue
        key = re.sub(r"\.grandma$", ".gamma", key)
        if m := _DAMP.match(key):
            key = m[1] + ".weight"
        elif ".parametrizations." in key:
            raise ValueError(
                f"{key}: reparametrised weights (spectral reparametrisation) are not supported; "
                "use a published inference checkpoint"
            )
        out[key] = value
    return out


def _fit_arch(arch: RadioArch, state: dict, meta: dict) -> RadioArch:
    """``arch`` with the optional parts and the register count the checkpoint has."""
    cls = int(meta.get("num_cls_tokens", arch.num_cls_tokens))
    tokens = state.get("model.patch_generator.cls_token.token")
    registers = int(tokens.shape[0]) - cls if tokens is not None else arch.num_registers
    return replace(
        arch,
        num_cls_tokens=cls,
        num_registers=max(registers, 0),
        layer_scale="model.blocks.0.ls1.gamma" in state,
        final_norm="model.norm.weight" in state,
        feature_normalizer="feature_normalizer.mean" in state,
    )


def _fmt(keys: list[str]) -> str:
    return f"{', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"


def radio_from_state_dict(
    name: str, state: dict, meta: dict | None = None, source: object = "state dict"
) -> RadioEncoder:
    """A :class:`RadioEncoder` of architecture ``name`` (a key of ``RADIO_ARCHS``) holding a
    RADIO state dict in any published layout; ``meta`` from :func:`load_radio_file`.

    Raises ValueError naming the missing, unexpected and mis-shaped keys when the weights do
    not fit the architecture (another size, another model), ``source`` naming the weights.
    """
    if name not in RADIO_ARCHS:
        raise ValueError(f"unknown RADIO architecture {name!r}; known: {', '.join(RADIO_ARCHS)}")
    converted = convert_radio_state_dict(state)
    if not any(k.startswith("model.patch_generator.") for k in converted):
        raise ValueError(
            f"{source} is not a RADIO checkpoint (no base_model.patch_generator.* or "
            "radio_model.model.patch_generator.* keys)"
        )
    meta = dict(meta or {})
    arch = _fit_arch(RADIO_ARCHS[name], converted, meta)
    idxs = converted.pop("summary_idxs", None)
    if idxs is None:
        idxs = torch.tensor(meta.get("summary_idxs", range(arch.num_cls_tokens)))
    idxs = idxs.to(torch.long).reshape(-1)
    if idxs.numel() == 0 or int(idxs.min()) < 0 or int(idxs.max()) >= arch.num_cls_tokens:
        raise ValueError(
            f"{source}: summary indices {idxs.tolist()} do not address the "
            f"{arch.num_cls_tokens} summary tokens"
        )
    model = RadioEncoder(arch, name=name)
    model.summary_idxs = idxs.clone()
    expected = {k: v for k, v in model.state_dict().items() if k != "summary_idxs"}
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(
        f"{k} {tuple(converted[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(converted)
        if converted[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source} does not fit RADIO architecture {name!r} (is it another size?): "
            + "; ".join(
                f"{label} ({len(keys)}): {_fmt(keys)}"
                for label, keys in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("shape mismatches", wrong),
                )
                if keys
            )
        )
    converted = {k: v.to(expected[k].dtype) for k, v in converted.items()}
    model.load_state_dict({**converted, "summary_idxs": model.summary_idxs})
    return model.eval()


def build_radio(spec, device=None, *, random_weights: bool = False) -> RadioEncoder:
    """A :class:`RadioEncoder` in eval mode on ``device``.

    ``spec``: a registry name (``"c-radio_v3-l"``, ``"c-radio_v3-b"``, ``"radio_v2.5-l"``,
    ``"radio_v2.5-b"``: the official file from the weights folder, fetched by
    ``ovseg weights download NAME``); ``"NAME:/path"`` (a ``.pth.tar`` or ``.safetensors`` file
    of architecture NAME); a built :class:`RadioEncoder`; or ``"radio-tiny-random"`` (2 blocks,
    width 32, random, for tests). ``random_weights`` builds a registered architecture with
    random weights, for timing only (it warns).
    """
    from ovseg.models import weights
    from ovseg.models.build import _RANDOM_WARNING, resolve_device

    device = resolve_device(device)
    if isinstance(spec, RadioEncoder):
        return spec.eval().to(device)
    if not isinstance(spec, str):
        raise TypeError(f"RADIO model must be a name, 'NAME:/path' or a RadioEncoder, got {spec!r}")
    name, sep, path = spec.partition(":")
    if name not in RADIO_ARCHS:
        raise ValueError(
            f"unknown RADIO model {spec!r}; known names: {', '.join(RADIO_ARCHS)}, or "
            "'NAME:/path' for a checkpoint file of one of those"
        )
    if sep:
        state, meta = load_radio_file(path)
        return radio_from_state_dict(name, state, meta, Path(path)).to(device)
    if name == RADIO_TINY:
        return _random(name, seed=0).to(device)
    if random_weights:
        warnings.warn(_RANDOM_WARNING.format(what=f"RADIO {name}"), UserWarning, stacklevel=2)
        return _random(name, seed=None).to(device)
    file = weights.ensure_checkpoint(name)
    state, meta = load_radio_file(file)
    return radio_from_state_dict(name, state, meta, file).to(device)


def _random(name: str, seed: int | None) -> RadioEncoder:
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = RadioEncoder(RADIO_ARCHS[name], name=name)
        if name == RADIO_TINY:  # LayerScale at 1e-5 would hide the blocks from every test
            for block in model.model.blocks:
                for ls in (block.ls1, block.ls2):
                    ls.gamma.data.uniform_(0.5, 1.5)
    return model.eval()
