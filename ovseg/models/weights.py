"""SAM checkpoint registry, cache folder, verified download and safe loading.

One frozen :class:`Checkpoint` per official Segment Anything checkpoint records where it comes
from, its exact size in bytes, its SHA-256 and the preprocessing it expects (input size, pixel
mean/std on the 0-255 scale). Files live in :func:`weights_dir` (env ``OVSEG_WEIGHTS_DIR``, else
the repository's ``weights/`` folder in a source checkout, else ``~/.cache/ovseg/weights``).

:func:`download` streams to a temporary file in the destination folder, verifies size and hash,
then renames it into place: the final path only ever holds a complete, verified file.
:func:`ensure_checkpoint` returns a cached file after verifying it, or says exactly which
command fetches it. :func:`load_state_dict` loads with ``weights_only=True`` or safetensors.

CLIP weights are not managed here: open_clip pretrained tags and Hugging Face ids are fetched by
those libraries into their own caches.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ovseg.constants import OPENAI_MEAN, OPENAI_STD, SAM_PIXEL_MEAN, SAM_PIXEL_STD

__all__ = [
    "ENV_VAR",
    "DINO_CHECKPOINTS",
    "RADIO_CHECKPOINTS",
    "SAM2_CHECKPOINTS",
    "SAM_CHECKPOINTS",
    "Checkpoint",
    "all_checkpoints",
    "cached_path",
    "download",
    "ensure_checkpoint",
    "get_checkpoint",
    "load_state_dict",
    "sha256sum",
    "verify",
    "weights_dir",
]

ENV_VAR = "OVSEG_WEIGHTS_DIR"
_CHUNK = 1 << 20  # 1 MiB
_TIMEOUT_S = 60.0
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint.

    Attributes:
        name: registry key, e.g. ``"vit_b"``.
        arch: the architecture: a ``segment_anything.sam_model_registry`` key
            (``vit_b``/``vit_l``/``vit_h``), a SAM 2 architecture (``sam2.1_hiera_tiny``...,
            see :mod:`ovseg.models.sam2_weights`), a DINO ViT (``dino_vitb8``...) or a RADIO
            model (``c-radio_v3-l``..., see :mod:`ovseg.models.radio_weights`).
        url: official download URL.
        filename: file name in the weights folder.
        size: exact size in bytes, or ``None`` when unknown (size check skipped).
        sha256: lowercase hex SHA-256; a full 64-digit digest, or a published prefix (then only
            the prefix is compared), or ``None`` when unknown (hash check skipped).
        input_size: side of the square model input in pixels (longest side resized to this).
        pixel_mean, pixel_std: RGB normalisation on the 0-255 scale.
    """

    name: str
    arch: str
    url: str
    filename: str
    size: int | None
    sha256: str | None
    input_size: int = 1024
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD


def _sam(arch: str, tag: str, size: int, sha256: str) -> Checkpoint:
    filename = f"sam_{arch}_{tag}.pth"
    url = f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"
    return Checkpoint(arch, arch, url, filename, size, sha256)


# Sizes and SHA-256 digests of the official files as published by several independent projects
# (e.g. computational-cell-analytics/micro-sam `micro_sam/util.py` checksums); the vit_b size
# matches the server's Content-Length. Note the hex tag in SAM's file names is NOT a prefix of
# the file's SHA-256, so the full digests are stored.
SAM_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _sam(
            "vit_b",
            "01ec64",
            375_042_383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        ),
        _sam(
            "vit_l",
            "0b3195",
            1_249_524_607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        _sam(
            "vit_h",
            "4b8939",
            2_564_550_879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        ),
    )
}


def _sam2(name: str) -> Checkpoint:
    folder = "092824" if name.startswith("sam2.1") else "072824"
    url = f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/{name}.pt"
    return Checkpoint(name, name, url, f"{name}.pt", None, None)


# The official SAM 2.1 (September 2024) and SAM 2.0 (July 2024) checkpoints, as listed by
# facebookresearch/sam2's checkpoints/download_ckpts.sh. Meta publishes neither sizes nor digests,
# so those checks are skipped; the weights are checked key by key and shape by shape against the
# architecture when they are loaded (ovseg.models.sam2_weights).
SAM2_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _sam2(f"{version}_hiera_{size}")
        for version in ("sam2.1", "sam2")
        for size in ("tiny", "small", "base_plus", "large")
    )
}


def _dino(name: str, stem: str) -> Checkpoint:
    url = f"https://dl.fbaipublicfiles.com/dino/{stem}/{stem}.pth"
    # DINO normalises with ImageNet's mean and std, the same numbers as SAM's.
    return Checkpoint(name, name, url, f"{stem}.pth", None, None, 224)


# The official DINO backbones (facebookresearch/dino README, "backbone only"; ViT-S 21M and
# ViT-B 85M parameters, as the README gives them). DINO publishes no sizes or digests, so those
# checks are skipped; the state dict is checked key by key and shape by shape when it is loaded.
DINO_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _dino("dino_vitb8", "dino_vitbase8_pretrain"),
        _dino("dino_vitb16", "dino_vitbase16_pretrain"),
        _dino("dino_vits8", "dino_deitsmall8_pretrain"),
        _dino("dino_vits16", "dino_deitsmall16_pretrain"),
    )
}


def _radio(name: str, repo: str, filename: str, size: int | None, sha256: str | None, side: int):
    url = f"https://huggingface.co/nvidia/{repo}/resolve/main/{filename}"
    mean = tuple(round(255 * m, 6) for m in OPENAI_MEAN)  # the input conditioner's defaults
    std = tuple(round(255 * s, 6) for s in OPENAI_STD)
    return Checkpoint(name, name, url, filename, size, sha256, side, mean, std)


# The torch.hub files of NVlabs/RADIO's radio/common.py (fp16 "_half" training checkpoints,
# read without pickled code by ovseg.models.radio_weights); input_size = RADIO's preferred
# resolution. RADIOv2.5 sizes and SHA-256: the Git LFS pointers of huggingface.co/nvidia/RADIO
# commit 5409f826 ("Release RADIOv2.5 ViT-B/L models (#9)"). No digest of the C-RADIOv3 files
# was found published, so those checks are skipped; the weights are checked key by key and
# shape by shape when they are loaded.
RADIO_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _radio(
            "radio_v2.5-b",
            "RADIO",
            "radio-v2.5-b_half.pth.tar",
            649_011_254,
            "6bff4bd732d815136652d454598e8fe6c6f4e658716d5e6a697f0e6b60bd8a98",
            768,
        ),
        _radio(
            "radio_v2.5-l",
            "RADIO",
            "radio-v2.5-l_half.pth.tar",
            1_104_806_006,
            "50324e8cb086885126a896ad9ecbac46355cf0e4c1d8363763b01693a4618ff1",
            768,
        ),
        _radio("c-radio_v3-b", "C-RADIOv3-B", "c-radio_v3-b_half.pth.tar", None, None, 512),
        _radio("c-radio_v3-l", "C-RADIOv3-L", "c-radio-v3_l_half.pth.tar", None, None, 512),
    )
}


def all_checkpoints() -> dict[str, Checkpoint]:
    """Every registered checkpoint: SAM, SAM 2, DINO, then RADIO."""
    return {**SAM_CHECKPOINTS, **SAM2_CHECKPOINTS, **DINO_CHECKPOINTS, **RADIO_CHECKPOINTS}


# (path, size, mtime_ns) of files verified in this process, so repeated use skips rehashing.
_VERIFIED: set[tuple[str, int, int, str | None]] = set()


def get_checkpoint(name: str) -> Checkpoint:
    """The registry entry for ``name``; ValueError listing the known names otherwise."""
    registry = all_checkpoints()
    if not isinstance(name, str) or name not in registry:
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown checkpoint {name!r}; known checkpoints: {known}")
    return registry[name]


def _checkout_weights_dir() -> Path | None:
    """The repository's ``weights/`` folder when ovseg runs from a source checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    folder = root / "weights"
    is_checkout = (root / "pyproject.toml").is_file() or (root / ".git").exists()
    return folder if folder.is_dir() and is_checkout else None


def weights_dir() -> Path:
    """Folder holding checkpoints (not created here).

    ``$OVSEG_WEIGHTS_DIR`` if set and non-empty; else ``<repo>/weights`` in a source checkout;
    else ``~/.cache/ovseg/weights``.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return _checkout_weights_dir() or Path.home() / ".cache" / "ovseg" / "weights"


def cached_path(name: str) -> Path:
    """Where checkpoint ``name`` is (or would be) cached; the file may not exist."""
    return weights_dir() / get_checkpoint(name).filename


def sha256sum(path: str | os.PathLike) -> str:
    """Lowercase hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, checkpoint: Checkpoint, size: int, digest: str | None) -> None:
    if checkpoint.size is not None and size != checkpoint.size:
        raise ValueError(
            f"{path}: size {size} bytes does not match the expected {checkpoint.size} bytes "
            f"for checkpoint {checkpoint.name!r} (truncated or wrong file)"
        )
    expected = checkpoint.sha256.lower() if checkpoint.sha256 else None
    if expected and digest is not None and not digest.startswith(expected):
        kind = "SHA-256" if len(expected) == 64 else "SHA-256 prefix"
        raise ValueError(
            f"{path}: {kind} mismatch for checkpoint {checkpoint.name!r}: "
            f"expected {expected}, got {digest[: len(expected)]} (corrupt or wrong file)"
        )


def verify(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Check a file against ``checkpoint``: size first (cheap), then SHA-256.

    A ``sha256`` shorter than 64 digits is a published prefix and only the prefix is compared;
    a ``None`` size or hash skips that check. Raises FileNotFoundError if the file is missing,
    ValueError naming the file, expected and actual values on mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, checkpoint.sha256)
    if key in _VERIFIED:
        return
    _check(path, checkpoint, stat.st_size, None)
    if checkpoint.sha256:
        _check(path, checkpoint, stat.st_size, sha256sum(path))
    _VERIFIED.add(key)


def _open_url(url: str) -> IO[bytes]:
    """Open ``url`` for streaming (the only network access in ovseg.weights)."""
    request = urllib.request.Request(url, headers={"User-Agent": "ovseg"})
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S)


def _stream_to(url: str, out: IO[bytes], checkpoint: Checkpoint, progress: bool) -> tuple[int, str]:
    """Copy ``url`` into ``out``; returns (bytes written, SHA-256 hex)."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    written = 0
    with _open_url(url) as response:
        header = getattr(response, "headers", None)
        length = header.get("Content-Length") if header is not None else None
        total = int(length) if length and str(length).isdigit() else checkpoint.size
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=checkpoint.filename,
            disable=not progress,
        ) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if length and str(length).isdigit() and written < int(length):
        raise ConnectionError(f"download interrupted: got {written} of {length} bytes")
    return written, digest.hexdigest()


def download(
    name: str,
    *,
    force: bool = False,
    progress: bool = True,
    dest_dir: str | os.PathLike | None = None,
) -> Path:
    """Download checkpoint ``name`` into ``dest_dir`` (default :func:`weights_dir`).

    A file already there that verifies is returned without network access unless ``force``.
    The data goes to a hidden temp file in the same folder, is verified, then renamed into
    place; on any failure the temp file is removed and nothing is left at the final path.

    Raises:
        ValueError: unknown name, or the downloaded data fails the size/hash check.
        ConnectionError (an OSError): network failure or interrupted transfer (``from`` cause).
    """
    checkpoint = get_checkpoint(name)
    folder = Path(dest_dir).expanduser() if dest_dir is not None else weights_dir()
    target = folder / checkpoint.filename
    if target.is_file() and not force:
        try:
            verify(target, checkpoint)
            return target
        except ValueError as e:
            _log.warning("%s; downloading it again", e)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{checkpoint.filename}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(tmp, "xb") as out:
            try:
                size, digest = _stream_to(checkpoint.url, out, checkpoint, progress)
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionError(
                    f"could not download {checkpoint.url} to {target}: {e}"
                ) from e
        _check(tmp, checkpoint, size, digest)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stat = target.stat()
    _VERIFIED.add((str(target.resolve()), stat.st_size, stat.st_mtime_ns, checkpoint.sha256))
    return target


def ensure_checkpoint(name: str, *, download_missing: bool = False) -> Path:
    """Path of the verified cached checkpoint ``name``.

    With ``download_missing``, a missing or corrupt file is (re)downloaded. Otherwise a missing
    file raises FileNotFoundError naming the file, the folder searched, the environment
    variable and the command that fetches it; a corrupt file raises ValueError with its path.
    Unknown names raise ValueError listing the known ones.
    """
    checkpoint = get_checkpoint(name)
    path = weights_dir() / checkpoint.filename
    if path.is_file():
        try:
            verify(path, checkpoint)
            return path
        except ValueError as e:
            if not download_missing:
                raise ValueError(
                    f"{e}. Delete {path} and fetch it again: ovseg weights download {name} --force"
                ) from e
            _log.warning("%s; downloading it again", e)
            return download(name, force=True)
    if download_missing:
        return download(name)
    raise FileNotFoundError(
        f"checkpoint {name!r} ({checkpoint.filename}) not found in {path.parent} "
        f"(set {ENV_VAR} to use another folder). Fetch it with: ovseg weights download {name}"
    )


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a state dict (str -> Tensor)")
    return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load a state dict on the CPU without executing pickled code.

    ``.safetensors`` files load with safetensors; anything else with
    ``torch.load(..., map_location="cpu", weights_only=True)``. A checkpoint wrapping its
    weights under ``"state_dict"`` or ``"model"`` is unwrapped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is unreadable or does not hold a ``str -> Tensor`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"cannot read safetensors file {path}: {e}") from e
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many types on junk; all mean "unreadable"
        raise ValueError(f"cannot load checkpoint {path} (weights_only=True): {e}") from e
    return _unwrap(obj, path)
