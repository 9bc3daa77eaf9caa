"""The app against hostile input and faults: uploads above the limit are refused by the server
(a 300 MB one included), a file that is not an image gets ovseg's message, ``--auth`` and the
warning when serving beyond loopback without it, and temporary folders that go when their
session ends, when the process exits, and (after a SIGKILL) when the next app starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.app import tempfiles

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_folders_are_named_after_their_process_and_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder = tempfiles.make_folder("video")
    assert folder.parent == tmp_path and folder.name.startswith(f"ovseg-video-{os.getpid()}-")
    (folder / ".overlay.mp4.x1y2.tmp").write_bytes(b"half")
    tempfiles.remove_folder(folder)
    assert not folder.exists() and folder not in tempfiles._OWNED
    with pytest.raises(ValueError, match="kind"):
        tempfiles.make_folder("other")
    from ovseg.app.session import Session

    session = Session()
    downloads = session.folder()
    assert downloads.name.startswith(f"ovseg-app-{os.getpid()}-") and downloads in tempfiles._OWNED
    session.close()
    assert not downloads.exists()


def test_clean_stale_removes_only_ours_whose_process_is_gone(tmp_path):
    dead, old = _dead_pid(), time.time() - 2 * tempfiles.STALE_AGE_S
    folders = {
        "dead": tmp_path / f"ovseg-app-{dead}-abcd_123",
        "dead video": tmp_path / f"ovseg-video-{dead}-x2y3z4w5",
        "alive": tmp_path / f"ovseg-app-{os.getpid()}-abcd_123",
        "parent alive": tmp_path / f"ovseg-video-{os.getppid()}-abcd_123",
        "old, no pid": tmp_path / "ovseg-app-q1w2e3r4",
        "new, no pid": tmp_path / "ovseg-app-a1s2d3f4",
        "not ours": tmp_path / f"ovseg-apps-{dead}-abcd_123",
        "not ours either": tmp_path / f"other-app-{dead}-abcd_123",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / ".labels.png.abcd.tmp").write_bytes(b"x")
    os.utime(folders["old, no pid"], (old, old))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"ovseg-app-{dead}-zzzz9999").symlink_to(target)  # never followed
    (tmp_path / f"ovseg-app-{dead}-yyyy8888").write_bytes(b"a file, not a folder")

    removed = tempfiles.clean_stale(tmp_path)

    gone = {"dead", "dead video", "old, no pid"}
    assert set(removed) == {folders[k] for k in gone}
    assert all(folders[k].exists() == (k not in gone) for k in folders)
    assert target.is_dir() and (tmp_path / f"ovseg-app-{dead}-yyyy8888").is_file()


def test_folders_go_at_exit_and_after_a_sigkill_with_the_next_app(tmp_path):
    # the module alone (the app package would import torch: seconds per process here)
    script = textwrap.dedent(
        f"""
        import importlib.util, os, signal, sys, tempfile
        tempfile.tempdir = {str(tmp_path)!r}
        path = {str(REPO / "ovseg" / "app" / "tempfiles.py")!r}
        spec = importlib.util.spec_from_file_location("tempfiles", path)
        tempfiles = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tempfiles)
        folder = tempfiles.make_folder("app")
        (folder / ".labels.png.abcd.tmp").write_bytes(b"half-written")
        tempfiles.make_folder("video")
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    normal = subprocess.run([sys.executable, "-c", script, "exit"], capture_output=True, text=True)
    assert normal.returncode == 0, normal.stderr
    assert not list(tmp_path.glob("ovseg-*"))  # atexit removed both
    killed = subprocess.run([sys.executable, "-c", script, "kill"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(tmp_path.glob("ovseg-*"))
    assert [p.name.split("-")[1] for p in left] == ["app", "video"]
    assert tempfiles.clean_stale(tmp_path) and not list(tmp_path.glob("ovseg-*"))


@pytest.fixture(scope="module")
def seg():
    from ovseg.pipeline import Segmenter

    return Segmenter("tiny-random", "tiny-random", device="cpu", templates="simple")


@pytest.fixture(scope="module")
def served(seg):
    """The app with its default upload limit, served on a free 127.0.0.1 port."""
    pytest.importorskip("gradio")
    from ovseg.app import build_app

    app = build_app(seg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    yield app, f"http://127.0.0.1:{port}"
    app.close()


def _multipart(size: int, chunk: int = 1 << 20):
    yield (
        b'--ovsegb\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    for start in range(0, size, chunk):
        yield b"\0" * min(chunk, size - start)
    yield b"\r\n--ovsegb--\r\n"


def test_a_300_mb_upload_is_refused_and_a_small_one_accepted(served):
    import httpx

    from ovseg.app.ui import DEFAULT_MAX_FILE_SIZE

    app, url = served
    assert DEFAULT_MAX_FILE_SIZE == "50mb" and app.max_file_size == 50 << 20
    upload = f"{url}/gradio_api/upload"
    headers = {"Content-Type": "multipart/form-data; boundary=ovsegb"}
    big = httpx.post(upload, content=_multipart(300 << 20), headers=headers, timeout=120)
    assert big.status_code == 413 and "maximum allowed size" in big.text
    small = httpx.post(upload, files={"files": ("a.png", b"x" * 1000, "image/png")})
    assert small.status_code == 200 and len(small.json()) == 1
    cache = Path(small.json()[0]).parents[1]
    sizes = [p.stat().st_size for p in cache.rglob("*") if p.is_file()]
    assert max(sizes) < 10 << 20  # nothing of the refused upload stays on disk


def test_launch_takes_another_limit(seg):
    pytest.importorskip("gradio")
    import gradio as gr

    from ovseg.app import build_app

    seen = {}

    def fake_launch(self, *args, **kwargs):
        seen.update(kwargs)

    original = gr.Blocks.launch
    try:
        gr.Blocks.launch = fake_launch
        app = build_app(seg, max_file_size="1kb")
        app.launch(server_port=1)
        assert seen["max_file_size"] == "1kb"
        app.launch(max_file_size=None)
        assert seen["max_file_size"] is None
    finally:
        gr.Blocks.launch = original


def test_a_file_that_is_not_an_image_gets_ovsegs_message(served, tmp_path):
    import gradio as gr
    from gradio.data_classes import ImageData

    from ovseg.app.ui import UnreadableImage

    app, _ = served
    (image_in,) = [b for b in app.blocks.values() if b.elem_id == "ovseg-input"]
    assert type(image_in) is gr.Image  # the page shows Gradio's own image component
    garbage = tmp_path / "photo.png"
    garbage.write_bytes(b"this is not an image")
    out = image_in.preprocess(ImageData(path=str(garbage), orig_name="photo.png"))
    assert isinstance(out, UnreadableImage) and str(tmp_path) not in out.message
    assert out.message.startswith("Could not read this image (photo.png): not an image file.")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    assert image_in.preprocess(ImageData(path=str(good), orig_name="good.png")) == str(good)


def test_states_delete_their_folders_when_the_session_ends(served):
    import gradio as gr

    from ovseg.app.tempfiles import remove_folder
    from ovseg.app.ui import _close

    app, _ = served
    callbacks = {b.delete_callback for b in app.blocks.values() if isinstance(b, gr.State)}
    assert callbacks == {_close, remove_folder}
    assert app.delete_cache is not None  # Gradio's copies of uploads and outputs expire too


@pytest.fixture
def fake_app(monkeypatch):
    """``ovseg app`` up to the launch: a fake Segmenter and app that record what they got."""
    import ovseg.app
    import ovseg.pipeline

    launched = {}

    class FakeApp:
        def launch(self, **kwargs):
            launched.update(kwargs)

    monkeypatch.setattr(ovseg.pipeline, "Segmenter", lambda *a, **k: object())
    monkeypatch.setattr(ovseg.app, "build_app", lambda *a, **k: launched.update(k) or FakeApp())
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.delenv("OVSEG_APP_AUTH", raising=False)
    return launched


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_cli_auth_limit_and_the_warning_beyond_loopback(fake_app, capsys, monkeypatch):
    from ovseg.cli import main

    base = ["app", "--sam", "tiny-random", "--clip", "tiny-random", "--port", _free_port()]
    assert main([*base, "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "warning: serving on --host 0.0.0.0 without --auth" in err
    assert fake_app["auth"] is None and fake_app["max_file_size"] == 50 << 20
    cache = Path(os.environ["GRADIO_TEMP_DIR"])  # Gradio's uploads: a folder of this process
    assert cache.name.startswith(f"ovseg-app-{os.getpid()}-") and cache.is_dir()
    tempfiles.remove_folder(cache)
    monkeypatch.delenv("GRADIO_TEMP_DIR")

    assert main([*base, "--host", "0.0.0.0", "--auth", "ann:s3cret", "--max-file-size", "2mb"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert fake_app["auth"] == ("ann", "s3cret") and fake_app["max_file_size"] == 2 << 20
    tempfiles.remove_folder(os.environ.pop("GRADIO_TEMP_DIR"))

    assert main(base) == 0  # loopback: no warning
    assert "warning" not in capsys.readouterr().err
    tempfiles.remove_folder(os.environ.pop("GRADIO_TEMP_DIR"))
    monkeypatch.setenv("OVSEG_APP_AUTH", "bob:pw")
    assert main([*base, "--share"]) == 0
    assert "warning" not in capsys.readouterr().err and fake_app["auth"] == ("bob", "pw")
    tempfiles.remove_folder(os.environ.pop("GRADIO_TEMP_DIR"))

    for bad in (["--auth", "nopassword"], ["--auth", ":pw"], ["--max-file-size", "lots"],
                ["--max-file-size", "0"]):  # fmt: skip
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ovseg app: error: --") and "Traceback" not in err
