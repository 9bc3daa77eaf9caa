"""The app's temporary folders, and their removal.

Every folder the app writes is made by :func:`make_folder` in the system's temporary folder,
named ``ovseg-app-PID-XXXXXXXX`` or ``ovseg-video-PID-XXXXXXXX`` after the process that owns
it. A folder is removed when its session ends (:func:`remove_folder`), every folder of this
process when it exits (``atexit``), and folders left by an app process that was killed
(SIGKILL, a crash: no ``atexit``) when a later app starts (:func:`clean_stale`). Temporary
files (``.NAME.XXXX.tmp`` of an interrupted atomic write) only ever lie inside these folders,
so they go with them.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["KINDS", "STALE_AGE_S", "clean_stale", "make_folder", "remove_folder", "remove_owned"]

KINDS = ("app", "video")
STALE_AGE_S = 24 * 3600  # a folder without an owner's pid (older ovseg): removed after a day
# ovseg-{kind}-{pid}-{mkdtemp's 8 characters}; without the pid for folders of older versions
_NAME = re.compile(r"^ovseg-(app|video)-(?:(\d+)-)?[a-z0-9_]{8}$")
_OWNED: set[Path] = set()
_LOCK = threading.Lock()
_UID = os.getuid() if hasattr(os, "getuid") else 0  # st_uid is 0 where there are no uids


def make_folder(kind: str) -> Path:
    """A new empty folder for ``kind`` (``"app"`` or ``"video"``) owned by this process."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = Path(tempfile.mkdtemp(prefix=f"ovseg-{kind}-{os.getpid()}-"))
    with _LOCK:
        if not _OWNED:
            atexit.register(remove_owned)  # registered once per process (remove_owned empties it)
        _OWNED.add(folder)
    return folder


def remove_folder(folder: str | os.PathLike | None) -> None:
    """Delete ``folder`` and everything in it (nothing if it is None or already gone)."""
    if folder is None:
        return
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    with _LOCK:
        _OWNED.discard(folder)


def remove_owned() -> None:
    """Delete every folder this process made (run at exit)."""
    with _LOCK:
        folders = list(_OWNED)
        _OWNED.clear()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: keep its folder
    return True


def clean_stale(
    root: str | os.PathLike | None = None, max_age_s: float = STALE_AGE_S
) -> list[Path]:
    """Remove the folders of earlier app processes that no longer run; the folders removed.

    Only directories named as :func:`make_folder` names them, owned by this user, in ``root``
    (default: the system's temporary folder) count: those whose owner's pid is no running
    process, and those without a pid (made by an older ovseg) not modified for
    ``max_age_s`` seconds. A folder of a process that still runs is never touched.
    """
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not entry.is_dir() or entry.is_symlink() or info.st_uid != _UID:
            continue
        pid = match.group(2)
        stale = not _alive(int(pid)) if pid else now - info.st_mtime > max_age_s
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
