"""What a distributed run reads: the images named by its inputs, and their bytes.

An input is one of:

- a folder, or one image file, on this machine (searched as ``ovseg segment`` does);
- a glob pattern (``photos/**/*.jpg``; ``**`` spans folders);
- a text file (``.txt``, ``.lst``, ``.list``) of paths or URIs, one per line (blank lines and
  ``#`` comments skipped; relative paths are relative to the text file's folder);
- a URI that pyarrow's file systems read (``s3://bucket/prefix/``, ``gs://...``,
  ``file:///...``): a folder-like prefix is listed recursively for image suffixes.

Each image keeps its path relative to the input root (the deepest folder holding all of
them), so its outputs are named exactly as a local ``ovseg segment`` run names them.
"""

from __future__ import annotations

import glob
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ovseg.cli._outputs import IMAGE_SUFFIXES, InputImage, collect_images

__all__ = ["LIST_SUFFIXES", "is_uri", "list_inputs", "read_image"]

LIST_SUFFIXES = {".txt", ".lst", ".list"}
_GLOB_CHARS = set("*?[")


def is_uri(text: str) -> bool:
    """Whether ``text`` names a location with a scheme (``s3://``, ``file://``...)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


def list_inputs(inputs: Sequence[str], out: Path) -> tuple[str, list[InputImage]]:
    """The input root and the images of ``inputs`` (see the module docstring), sorted by their
    relative names, each once. Local images have a :class:`~pathlib.Path`, remote ones their URI
    (a ``str``) as ``path``.

    Raises:
        FileNotFoundError: a glob, list or location with no image, or a missing list file.
        ValueError: a URI that pyarrow cannot open.
    """
    local: list[str] = []
    remote: list[str] = []
    for item in inputs:
        item = str(item)
        if is_uri(item):
            remote += _list_uri(item)
        elif set(item) & _GLOB_CHARS and not os.path.exists(item):
            found = sorted(glob.glob(item, recursive=True))
            found = [f for f in found if Path(f).suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise FileNotFoundError(f"no images match {item!r}")
            local += found
        elif Path(item).suffix.lower() in LIST_SUFFIXES:
            for entry in _read_list(Path(item)):
                (remote if is_uri(entry) else local).append(entry)
        else:
            local.append(item)
    if local and remote:
        raise ValueError(
            "inputs mix local paths and URIs; give one kind per run (a file:// URI names a "
            "local file as a URI)"
        )
    if not remote:
        root, images = collect_images(local, out)
        return str(root), images
    return _remote_images(remote)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"list of images {path} not found")
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_uri(line) and not os.path.isabs(line):
            line = str(path.parent / line)
        entries.append(line)
    if not entries:
        raise FileNotFoundError(f"list of images {path} names no image")
    return entries


def _filesystem(uri: str):
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise ValueError(f"cannot open {uri!r} with pyarrow: {e}") from e


def _list_uri(uri: str) -> list[str]:
    """``uri`` itself if it is a file, else the images under it (recursively)."""
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    info = filesystem.get_file_info(path)
    scheme = uri.partition("://")[0]
    if info.type == fs.FileType.File:
        return [uri]
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} not found")
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    found = sorted(
        f"{scheme}://{i.path}"
        for i in infos
        if i.type == fs.FileType.File
        and PurePosixPath(i.path).suffix.lower() in IMAGE_SUFFIXES
        and not any(p.startswith(".") for p in PurePosixPath(i.path).relative_to(path).parts)
    )
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {uri}")
    return found


def _remote_images(uris: list[str]) -> tuple[str, list[InputImage]]:
    unique = sorted(set(uris))
    split = [u.partition("://") for u in unique]
    schemes = {s for s, _, _ in split}
    if len(schemes) > 1:
        raise ValueError(f"inputs mix locations ({', '.join(sorted(schemes))}); give one")
    scheme = schemes.pop()
    paths = [PurePosixPath(p) for _, _, p in split]
    root = PurePosixPath(posixpath.commonpath([str(p.parent) for p in paths]))
    images = [
        InputImage(u, p.relative_to(root).as_posix()) for u, p in zip(unique, paths, strict=True)
    ]
    return f"{scheme}://{root}", sorted(images, key=lambda i: i.name)


def read_image(path):
    """The image at ``path`` (a local path or a URI) as RGB uint8 ``(H, W, 3)``, decoded by
    :func:`ovseg.image.load_image` exactly as a local run decodes it.

    Raises:
        FileNotFoundError: no such file; ValueError: not a readable image.
    """
    from ovseg.image import load_image

    if not isinstance(path, str) or not is_uri(path):
        return load_image(path)
    import io

    from PIL import Image

    filesystem, where = _filesystem(path)
    try:
        with filesystem.open_input_stream(where) as fh:
            data = fh.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image file not found: {path}") from e
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return load_image(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image file {path}: {e}") from e
