"""Shared fixtures: tiny random models and the CamVid frames beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never reach a model hub: fail fast instead of retrying a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CAMVID = Path(os.environ.get("OVSEG_CAMVID", REPO.parent / "shared" / "data" / "camvid-val"))


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    """The CamVid validation folder; tests using it skip when it is absent."""
    if not (CAMVID / "images").is_dir():
        pytest.skip(f"CamVid data not found at {CAMVID} (../shared/data/camvid-val)")
    return CAMVID


@pytest.fixture(scope="session")
def camvid_frame(camvid_dir) -> Path:
    return sorted((camvid_dir / "images").glob("*.png"))[0]


@pytest.fixture(scope="session")
def camvid_image(camvid_frame) -> np.ndarray:
    from ovseg.image import load_image

    return load_image(camvid_frame)


@pytest.fixture(scope="session")
def synthetic_image() -> np.ndarray:
    """A 120x160 RGB image with a few flat shapes (no external data)."""
    img = np.zeros((120, 160, 3), np.uint8)
    img[:60] = (135, 190, 235)
    img[60:] = (90, 90, 90)
    img[70:110, 20:70] = (200, 30, 30)
    img[30:90, 100:140] = (30, 160, 40)
    return img


@pytest.fixture(scope="session")
def tiny_segmenter():
    """Tiny random SAM + CLIP with the grid's quality filters off (random weights rarely pass
    them), shared by the session: tests must not depend on its cached image."""
    from ovseg.pipeline import Segmenter
    from ovseg.proposals.grid import GridOptions

    grid = GridOptions(
        points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9
    )
    return Segmenter("tiny-random", "tiny-random", device="cpu", grid=grid, method="sam-clip")


@pytest.fixture(autouse=True)
def _text_cache_dir(tmp_path_factory, monkeypatch):
    """Each test writes text embeddings to its own empty cache folder (never the user's), so
    no test reads what another wrote; subprocesses inherit it."""
    monkeypatch.setenv("OVSEG_CACHE_DIR", str(tmp_path_factory.mktemp("ovseg-cache")))
