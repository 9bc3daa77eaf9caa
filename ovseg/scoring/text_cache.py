"""Text embeddings kept on disk between runs, keyed by what determines them.

One file per (text tower, template set, name) under ``text_cache_dir()``: ``$OVSEG_CACHE_DIR/text``
when ``OVSEG_CACHE_DIR`` is set and non-empty, else ``~/.cache/ovseg/text``. Setting
``OVSEG_TEXT_CACHE=0`` turns the disk cache off (embeddings are then kept in memory only);
:func:`clear` (or deleting the folder) empties it.

The key is the SHA-256 of: the format version; :func:`text_identity` of the model (a hash of
the text tower's weights, buffers, dtypes and structure, never of its device); the template
strings; the name; and the token ids the tokenizer gives for the name's prompts. So a change of
weights, precision, tokenizer, template set or name is a new entry, and an entry computed on one
device is served on another. Values are float32.

Files are written to a temporary name and renamed, so concurrent writers and readers only ever
see complete files; each file repeats its key and ends with a SHA-256 of its content, so a
corrupt, truncated or misplaced file is ignored (and rewritten by the next store), never served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import xxhash

from ovseg._io import atomic_write

__all__ = [
    "CACHE_ENV",
    "SWITCH_ENV",
    "cache_dir",
    "clear",
    "enabled",
    "entry_key",
    "load",
    "store",
    "text_cache_dir",
    "text_identity",
    "weights_token",
]

CACHE_ENV = "OVSEG_CACHE_DIR"
SWITCH_ENV = "OVSEG_TEXT_CACHE"
_FORMAT = b"ovseg-text-embedding-v1"
_MAGIC = b"OVSEGTE1"
_SUFFIX = ".bin"
_log = logging.getLogger(__name__)
_identities: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_warned: set[str] = set()


def cache_dir() -> Path:
    """ovseg's cache folder (not created here): ``$OVSEG_CACHE_DIR`` if set and non-empty,
    else ``~/.cache/ovseg``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ovseg"


def text_cache_dir() -> Path:
    """Folder of the text embedding files: ``cache_dir() / "text"``."""
    return cache_dir() / "text"


def enabled() -> bool:
    """False when ``$OVSEG_TEXT_CACHE`` is ``0``, ``off``, ``false`` or ``no``."""
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def _text_parts(model: torch.nn.Module) -> list[tuple[str, object]]:
    """The modules and tensors a model's text embedding depends on (the whole model when its
    text tower is of no known layout)."""
    if all(hasattr(model, a) for a in ("token_embedding", "transformer", "ln_final")):
        names = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        names += ("text_projection", "attn_mask")
    elif isinstance(getattr(model, "text", None), torch.nn.Module):
        names = ("text",)
    elif isinstance(getattr(model, "text_model", None), torch.nn.Module):
        names = ("text_model", "text_projection")
    else:
        return [("", model)]
    return [(n, getattr(model, n, None)) for n in names]


def _scalars(obj) -> dict:
    """An object's plain settings (ints, floats, strings, bools, tuples of them)."""
    plain = (int, float, str, bool, type(None))

    def simple(v) -> bool:
        return isinstance(v, plain) or (isinstance(v, tuple) and all(simple(e) for e in v))

    skip = ("training", "name_or_path")
    return {
        k: v for k, v in sorted(vars(obj).items()) if k[0] != "_" and k not in skip and simple(v)
    }


def _tensors(parts) -> list[tuple[str, torch.Tensor]]:
    out = []
    for prefix, part in parts:
        if isinstance(part, torch.nn.Module):
            named = [*part.named_parameters(), *part.named_buffers()]
            out += [(f"{prefix}.{n}", t) for n, t in named]
        elif isinstance(part, torch.Tensor):
            out.append((prefix, part))
    return out


def weights_token(model: torch.nn.Module) -> tuple:
    """A cheap token that changes when a text-tower tensor is replaced, moved, cast or changed in
    place (``copy_``, ``load_state_dict``): storage address and version counter of each."""
    return tuple(
        (n, t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
        for n, t in _tensors(_text_parts(model))
    )


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def text_identity(model: torch.nn.Module) -> str:
    """Hex SHA-256 of the model's text tower: every parameter and buffer (name, dtype, shape,
    and the xxh3-128 digest of its bytes), every submodule's type and plain settings (heads,
    eps, activation, pooling...), the model's class and the library version. It identifies the
    weights actually loaded, whether from a file or built by the caller, and not their device.
    Memoised per model until :func:`weights_token` changes (a ViT-B/16 text tower is about
    250 MB: tens of milliseconds)."""
    token = weights_token(model)
    known = _identities.get(model)
    if known is not None and known[0] == token:
        return known[1]
    parts = _text_parts(model)
    digest = hashlib.sha256(_FORMAT)
    described = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model": _scalars(model),
        "versions": _versions(model),
        "modules": [
            (f"{prefix}.{name}", f"{type(m).__module__}.{type(m).__qualname__}", _scalars(m))
            for prefix, part in parts
            if isinstance(part, torch.nn.Module)
            for name, m in part.named_modules()
        ],
    }
    config = getattr(getattr(model, "config", None), "text_config", None)
    if config is not None:
        described["config"] = config.to_dict()
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, t in _tensors(parts):  # xxh3-128 of the bytes: ~15x faster than SHA-256
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(xxhash.xxh3_128_digest(_tensor_bytes(t)))
    value = digest.hexdigest()
    _identities[model] = (token, value)
    return value


def _versions(model) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    root = type(model).__module__.split(".")[0]
    package = {"open_clip": "open_clip_torch"}.get(root, root)
    try:
        return {package: version(package)}
    except (PackageNotFoundError, ValueError):
        return {}


def entry_key(
    identity: str, templates: Sequence[str], name: str, tokens: Mapping[str, torch.Tensor]
) -> str:
    """Hex SHA-256 key of one name's embedding: ``tokens`` are the tokenizer's outputs for the
    name's prompts (one row per template)."""
    digest = hashlib.sha256(_FORMAT)
    digest.update(json.dumps([identity, list(templates), name]).encode())
    for k in sorted(tokens):
        t = tokens[k]
        digest.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        digest.update(_tensor_bytes(t))
    return digest.hexdigest()


def _path(key: str) -> Path:
    return text_cache_dir() / f"{key}{_SUFFIX}"


def load(key: str) -> np.ndarray | None:
    """The stored float32 ``(D,)`` embedding of ``key``, or None when it is absent, unreadable,
    corrupt, or holds another key."""
    try:
        data = _path(key).read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 32 + 4
    if len(data) < head + 32 or not data.startswith(_MAGIC):
        return _bad(key, "header")
    if data[len(_MAGIC) : len(_MAGIC) + 32] != bytes.fromhex(key):
        return _bad(key, "key")
    (dim,) = struct.unpack("<I", data[head - 4 : head])
    if len(data) != head + 4 * dim + 32 or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        return _bad(key, "length or checksum")
    values = np.frombuffer(data, dtype="<f4", count=dim, offset=head).astype(np.float32)
    if dim == 0 or not np.isfinite(values).all():
        return _bad(key, "values")
    return values


def _bad(key: str, what: str) -> None:
    _log.warning("ovseg text cache: ignoring %s (bad %s); it will be rewritten", _path(key), what)
    return None


def store(key: str, embedding: np.ndarray | torch.Tensor) -> None:
    """Write ``embedding`` (D,) as float32 under ``key`` (atomic: temp file, then rename). A
    folder that cannot be written warns once and leaves the cache alone."""
    if isinstance(embedding, torch.Tensor):
        embedding = embedding.detach().float().cpu().numpy()
    values = np.ascontiguousarray(embedding, dtype="<f4").reshape(-1)
    body = _MAGIC + bytes.fromhex(key) + struct.pack("<I", values.size) + values.tobytes()
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: fh.write(body + hashlib.sha256(body).digest()))
    except OSError as e:
        if str(path.parent) not in _warned:
            _warned.add(str(path.parent))
            warnings.warn(
                f"ovseg: text embeddings not cached in {path.parent}: {e} (set {CACHE_ENV} to a "
                f"writable folder, or {SWITCH_ENV}=0 to turn the cache off)",
                RuntimeWarning,
                stacklevel=2,
            )


def clear() -> int:
    """Delete every text embedding file (and leftover temp files); returns how many."""
    folder = text_cache_dir()
    if not folder.is_dir():
        return 0
    removed = 0
    for path in [*folder.glob(f"*{_SUFFIX}"), *folder.glob(f".*{_SUFFIX}.*.tmp")]:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed
