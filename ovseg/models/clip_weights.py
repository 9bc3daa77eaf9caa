"""Where CLIP weights live, and loading them without touching the network.

- open_clip pretrained tags (``"ARCH/TAG"``, e.g. ``"ViT-B-16/openai"``) live in the weights
  folder's ``open_clip/`` subfolder (``$OVSEG_WEIGHTS_DIR/open_clip``, else
  ``<repo>/weights/open_clip`` in a source checkout, else ``~/.cache/ovseg/weights/open_clip``):
  tags hosted on the Hugging Face Hub in huggingface_hub's cache layout
  (``models--ORG--NAME/snapshots/REV/FILE``), the others under their URL's file name.
- Hugging Face models (``"hf:ORG/NAME"``) live in the Hugging Face cache (``$HF_HUB_CACHE``,
  default ``~/.cache/huggingface/hub``).

Building a model only reads these caches: weights that are not there raise
``FileNotFoundError`` at once, naming what is missing, where it was looked for and the command
that fetches it. ``ovseg weights download SPEC`` (:func:`fetch_clip`) is the one path that
goes online.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "fetch_clip",
    "open_clip_cache",
    "open_clip_file",
    "open_clip_pretrained",
    "verify_clip_file",
]

_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


def open_clip_cache() -> Path:
    """The folder of open_clip's pretrained weights (inside the ovseg weights folder)."""
    from ovseg.models.weights import weights_dir

    return weights_dir() / "open_clip"


def _hub_files(hf_hub: str) -> tuple[str, list[str]]:
    """open_clip's ``hf_hub`` entry -> (repo id, file names to try, in open_clip's order)."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    names = []
    if filename == HF_WEIGHTS_NAME:  # open_clip prefers a safetensors twin when there is one
        names.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return repo, [*names, filename]


def _source(arch: str, tag: str) -> tuple[dict, str | None, list[str], str | None]:
    """(pretrained config, hub repo or None, hub file names, download URL or None)."""
    import open_clip

    cfg = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub") if open_clip.pretrained.has_hf_hub() else None
    if hub:
        repo, names = _hub_files(hub)
        return cfg, repo, names, None
    return cfg, None, [], cfg.get("url") or None


def open_clip_file(arch: str, tag: str) -> Path | None:
    """The cached checkpoint of open_clip's ``arch`` / ``tag``, or None; never goes online."""
    cfg, repo, names, url = _source(arch, tag)
    if "file" in cfg:
        return Path(cfg["file"])
    cache = open_clip_cache()
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=str(cache))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    if url:
        path = cache / os.path.basename(url)
        return path if path.is_file() else None
    return None


def open_clip_pretrained(arch: str, tag: str, device):
    """open_clip's model ``arch`` with the pretrained weights ``tag`` from the cache, built as
    ``open_clip.create_model(arch, pretrained=tag)`` builds it (the tag's preprocessing and
    activation), without any network access.

    Raises:
        FileNotFoundError: the weights are not cached (the message says what, where, and the
            command that fetches them).
    """
    import open_clip

    file = open_clip_file(arch, tag)
    if file is None:
        raise FileNotFoundError(_missing(arch, tag))
    verify_clip_file(f"{arch}/{tag}", file)
    cfg = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    try:  # open_clip reads with weights_only=True (or safetensors): no pickled code runs
        return open_clip.create_model(
            arch,
            pretrained=str(file),
            device=device,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            force_preprocess_cfg={k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg},
        )
    except Exception as e:  # the loaders raise many types on a damaged file
        from ovseg.models.weights import reason

        raise ValueError(
            f"cached CLIP weights {file} of {arch}/{tag} do not load ({reason(e)}); delete the "
            f"file and fetch it again: ovseg weights download {arch}/{tag}"
        ) from e


def verify_clip_file(spec: str, file: Path) -> bool:
    """Check a cached CLIP file against its registry entry (:data:`~ovseg.models.checkpoints.
    CLIP_FILES`: size first, then SHA-256); whether there was an entry with a size or a hash
    to check against.

    Raises:
        ValueError: the file is not the published one (its path, what was expected, and the
            command that fetches it again).
    """
    from ovseg.models import weights

    entry = weights.CLIP_FILES.get((spec, Path(file).name))
    if entry is None or not entry.pinned:
        return False
    try:
        weights.verify(file, entry)
    except ValueError as e:
        raise ValueError(
            f"{e}. Delete {file} and fetch it again: ovseg weights download {spec}"
        ) from e
    return True


def _missing(arch: str, tag: str) -> str:
    _, repo, names, url = _source(arch, tag)
    cache = open_clip_cache()
    if repo:
        where = (
            f"{' or '.join(names)} of the Hugging Face repo {repo} under {cache} "
            f"(huggingface_hub cache layout)"
        )
    else:
        where = f"{os.path.basename(url or '?')} in {cache}"
    return (
        f"CLIP weights {arch}/{tag} are not cached: looked for {where}. Fetch them with: "
        f"ovseg weights download {arch}/{tag} (needs network; OVSEG_WEIGHTS_DIR sets the "
        "weights folder), or give a local file as ARCH:PATH"
    )


def hf_missing(model_id: str, error: Exception) -> str:
    """The message for a Hugging Face model that does not load from its folder or the cache."""
    from huggingface_hub import constants

    if Path(model_id).is_dir():
        return f"Hugging Face model folder {model_id} does not load: {error}"
    return (
        f"Hugging Face model {model_id!r} is not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}; HF_HOME or HF_HUB_CACHE set it) and is not a local folder. "
        f"Fetch it with: ovseg weights download hf:{model_id} (needs network)"
    )


def fetch_clip(spec: str) -> str:
    """Download the weights of a CLIP spec (``ARCH/TAG`` or ``hf:ORG/NAME``) into its cache;
    return where they are. The only function of ovseg that downloads CLIP weights."""
    if spec.startswith("hf:"):
        from huggingface_hub import constants
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model_id = spec.removeprefix("hf:")
        try:
            for auto in (AutoModel, AutoTokenizer, AutoImageProcessor):
                auto.from_pretrained(model_id)
        except OSError as e:
            raise OSError(
                f"could not download {spec} into {constants.HF_HUB_CACHE} ({e}); check the "
                f"network connection and the model id, and run again: ovseg weights download {spec}"
            ) from e
        return constants.HF_HUB_CACHE
    import open_clip

    arch, _, tag = spec.partition("/")
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown CLIP model {spec!r}: {arch!r} is not an open_clip architecture")
    if tag not in open_clip.list_pretrained_tags_by_model(arch):
        raise ValueError(
            f"unknown pretrained tag {tag!r} for {arch}; known: "
            f"{open_clip.list_pretrained_tags_by_model(arch)}"
        )
    cache = open_clip_cache()
    cache.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    try:
        return str(open_clip.pretrained.download_pretrained(cfg, cache_dir=str(cache)))
    except (OSError, RuntimeError) as e:  # no network, HF_HUB_OFFLINE, a server error...
        raise OSError(
            f"could not download CLIP weights {spec} into {cache} ({e}); check the network "
            f"connection and run again: ovseg weights download {spec}"
        ) from e
