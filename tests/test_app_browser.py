"""The app in a real headless Chromium: upload, classes, automatic mode, a click.

Starts ``ovseg app --sam tiny-random --clip tiny-random`` on a free 127.0.0.1 port and drives
Debian's ``/usr/bin/chromium`` through Playwright. Screenshots go to ``test-artifacts/``.
Run with ``pytest -m browser tests/test_app_browser.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("OVSEG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLASSES = "road; street, sky, building, tree, car, sidewalk"
START_TIMEOUT_S = 600  # generous: a loaded 2-core machine takes minutes to import and build
STEP_TIMEOUT_MS = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ovseg_command() -> list[str]:
    script = Path(sys.executable).with_name("ovseg")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ovseg"]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(
            f"headless Chromium not found at {CHROMIUM} "
            "(apt-get install chromium, or set OVSEG_CHROMIUM)"
        )
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ovseg[app]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "server.log"
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    command = [
        *_ovseg_command(),
        "app",
        "--sam",
        "tiny-random",
        "--clip",
        "tiny-random",
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-quality-filters",
        "--points-per-side",
        "8",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with opener.open(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the app did not answer on {url} within {START_TIMEOUT_S} s:\n"
                    f"{log.read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # SIGTERM stops the app as Ctrl-C does: its temporary folders (Gradio's uploads included)
    # are gone with it
    import tempfile

    assert not list(Path(tempfile.gettempdir()).glob(f"ovseg-*-{proc.pid}-*"))


@pytest.fixture(scope="module")
def frame() -> Path:
    camvid = REPO.parent / "shared" / "data" / "camvid-val" / "images"
    frames = sorted(camvid.glob("*.png"))
    if frames:
        return frames[0]
    bundled = sorted((REPO / "ovseg" / "assets").glob("camvid_*.jpg"))
    if not bundled:
        pytest.skip("no CamVid frame: neither ../shared/data/camvid-val nor ovseg/assets")
    return bundled[0]


@pytest.fixture()
def page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(app_url)
            page.wait_for_selector("#ovseg-input")
            yield page
            assert not errors, f"JavaScript errors in the page: {errors}"
        finally:
            browser.close()


def _canvas(page, previous: str | None = None):
    """(src, [naturalWidth, naturalHeight]) of the canvas image once it has loaded (and, with
    ``previous``, once its src differs from that one): no reading of a half-updated page."""
    page.wait_for_function(
        """previous => {
            const img = document.querySelector('#ovseg-canvas img');
            return img !== null && img.complete && img.naturalWidth > 0
                && (previous === null || img.getAttribute('src') !== previous);
        }""",
        arg=previous,
    )
    img = page.locator("#ovseg-canvas img")
    src = img.get_attribute("src")
    size = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    return src, size


def _status(page, text: str) -> str:
    """The status line once it contains ``text`` (waits, then returns it)."""
    from playwright.sync_api import expect

    status = page.locator("#ovseg-status")
    expect(status).to_contain_text(text, timeout=STEP_TIMEOUT_MS)
    return status.inner_text()


def _click_image_pixel(page, x: int, y: int) -> None:
    """Click image pixel (x, y) of the canvas, which shows the image at its top-left."""
    img = page.locator("#ovseg-canvas img")
    natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    box = img.bounding_box()
    scale = min(box["width"] / natural_w, box["height"] / natural_h, 1.0)
    left = (box["width"] - natural_w * scale) / 2
    top = (box["height"] - natural_h * scale) / 2
    img.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})


def test_upload_automatic_and_click_in_chromium(page, frame):
    page.locator("#ovseg-input input[type=file]").set_input_files(str(frame))
    _status(page, "Loaded")
    assert _canvas(page)[1] == [480, 360], "before segmenting, the canvas is the image"
    loaded_src = _canvas(page)[0]

    page.locator("#ovseg-classes textarea").fill(CLASSES)
    page.click("#ovseg-run")
    page.wait_for_selector("#ovseg-legend ul.ovseg-classes")
    status = _status(page, "segments")
    assert "⚠️" not in status, status
    overlay_src, overlay_size = _canvas(page, loaded_src)
    page.screenshot(path=str(ARTIFACTS / "app_automatic.png"), full_page=True)
    legend = page.locator("#ovseg-legend").inner_text()
    for name in ("road; street", "sky", "building", "tree", "car", "sidewalk"):
        assert name in legend
    assert "%" in legend and "Prompted objects" not in legend
    assert overlay_size[0] > 480 and overlay_size[1] >= 360, "overlay plus legend panel"
    page.wait_for_function("document.querySelectorAll('#ovseg-visible input[type=checkbox]')"
                           ".length === 6")  # fmt: skip
    page.wait_for_selector("#ovseg-confidence img")
    assert page.locator("#ovseg-confidence img").count() == 1

    page.locator("#ovseg-mode").get_by_text("points", exact=True).click()
    page.wait_for_selector("#ovseg-point", state="visible")
    _click_image_pixel(page, 380, 250)
    page.wait_for_selector("#ovseg-legend ul.ovseg-objects")
    _status(page, "Object 1 added (points)")
    clicked_src, clicked_size = _canvas(page, overlay_src)  # the overlay changes after a click
    page.screenshot(path=str(ARTIFACTS / "app_click.png"), full_page=True)
    assert "object 1 (points)" in page.locator("#ovseg-legend").inner_text()
    assert clicked_size[1] >= 360

    page.click("#ovseg-undo")
    page.wait_for_selector("#ovseg-legend ul.ovseg-objects", state="detached")
    _status(page, "Undone")
    page.screenshot(path=str(ARTIFACTS / "app_undo.png"), full_page=True)


def test_empty_class_list_shows_a_message(page, frame):
    page.locator("#ovseg-input input[type=file]").set_input_files(str(frame))
    _status(page, "Loaded")
    page.locator("#ovseg-classes textarea").fill(" , ")
    page.click("#ovseg-run")
    assert "empty" in _status(page, "Classes:")
    page.screenshot(path=str(ARTIFACTS / "app_empty_classes.png"), full_page=True)
    page.locator("#ovseg-classes textarea").fill("road, sky")
    page.click("#ovseg-run")
    page.wait_for_selector("#ovseg-legend ul.ovseg-classes")
    assert "road" in page.locator("#ovseg-legend").inner_text()


def test_a_file_that_is_not_an_image_gets_ovsegs_message(page, tmp_path):
    garbage = tmp_path / "holiday.png"
    garbage.write_bytes(b"this is not an image" * 100)
    page.locator("#ovseg-input input[type=file]").set_input_files(str(garbage))
    page.wait_for_function(
        "document.querySelector('#ovseg-status').innerText.includes('Could not read this image')"
    )
    status = page.locator("#ovseg-status").inner_text()
    assert "holiday.png): not an image file" in status and "Upload a PNG, JPEG" in status
    assert "/tmp" not in page.locator("body").inner_text()  # no server path shown
    page.screenshot(path=str(ARTIFACTS / "app_not_an_image.png"), full_page=True)
