"""Checkpoint cache folder, verified download and safe loading.

The registry (:mod:`ovseg.models.checkpoints`, re-exported here) holds one frozen
:class:`Checkpoint` per official SAM, SAM 2 and DINO file: where it comes from, its exact size
in bytes, its SHA-256, where those were read, and the preprocessing it expects. Files live in
:func:`weights_dir` (env ``OVSEG_WEIGHTS_DIR``, else the repository's ``weights/`` folder in a
source checkout, else ``~/.cache/ovseg/weights``).

:func:`download` streams to a temporary file in the destination folder, verifies size and hash,
then renames it into place: the final path only ever holds a complete, verified file.
:func:`ensure_checkpoint` returns a cached file after verifying it, or says exactly which
command fetches it. :func:`load_state_dict` loads with ``weights_only=True`` or safetensors.

CLIP weights are fetched by open_clip and transformers into their caches
(:mod:`ovseg.models.clip_weights`); the files of the presets' CLIP tags that have a published
digest (:data:`CLIP_FILES`) are checked with :func:`verify` before they load.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any

from ovseg.models.checkpoints import (
    CLIP_FILES,
    DINO_CHECKPOINTS,
    RADIO_CHECKPOINTS,
    SAM2_CHECKPOINTS,
    SAM_CHECKPOINTS,
    Checkpoint,
)

__all__ = [
    "CLIP_FILES",
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
    "reason",
    "sha256sum",
    "verify",
    "weights_dir",
]

ENV_VAR = "OVSEG_WEIGHTS_DIR"
_CHUNK = 1 << 20  # 1 MiB
_TIMEOUT_S = 60.0
_log = logging.getLogger(__name__)


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
            raise ValueError(
                f"cannot read safetensors file {path}: {reason(e)} (truncated or not safetensors)"
            ) from e
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many types on junk; all mean "unreadable"
        raise ValueError(
            f"cannot load checkpoint {path}: not a PyTorch state dict that loads without running "
            f"code (torch.load with weights_only=True: {reason(e)}); expected a .pt/.pth/.bin "
            "file saved by torch.save, or .safetensors"
        ) from e
    return _unwrap(obj, path)


def reason(error: BaseException) -> str:
    """One short line for ``error``: the loaders' messages run over several lines (torch's
    weights-only refusal puts the reason after ``WeightsUnpickler error:``)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    text = str(error).replace("WeightsUnpickler error:", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((x for x in lines if not x.startswith(boilerplate)), lines[0] if lines else "")
    line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."
