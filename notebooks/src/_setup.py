"""Shared first code cell of every notebook (inserted by ../build.py at "# %% setup")."""

# ruff: noqa: F401  (used by the notebooks)
# %% setup
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import ovseg

# >>> The one line to change: tiny random models (API demo, seconds on a CPU) or real ones. <<<
MODELS = dict(sam="tiny-random", clip="tiny-random")  # real: sam="vit_b", clip="ViT-B-16/openai"

TINY = MODELS["sam"] == "tiny-random" or MODELS["clip"] == "tiny-random"
# Random SAM masks rarely pass SAM's quality filters, so the tiny run lowers them and uses a
# coarse grid; real models keep the defaults (32x32 points, pred_iou 0.88, stability 0.95).
GRID = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0) if TINY else {}


def find_camvid():
    """The CamVid folder: $OVSEG_CAMVID, else shared/data/camvid-val in this folder or a parent
    (the repository root's ../shared/data/camvid-val). None when absent."""
    if os.environ.get("OVSEG_CAMVID"):
        candidates = [Path(os.environ["OVSEG_CAMVID"])]
    else:
        here = Path.cwd().resolve()
        candidates = [p / "shared" / "data" / "camvid-val" for p in (here, *here.parents)]
    return next((c for c in candidates if (c / "images").is_dir()), None)


def street_scene(height=240, width=320):
    """A generated road scene (RGB uint8) and its object layout, used when CamVid is absent:
    sky, a building, a road, a red car, a blue car and a tree."""
    img = np.zeros((height, width, 3), np.uint8)
    h, w = height, width
    img[: h // 2] = (135, 190, 235)  # sky
    img[h // 2 :] = (95, 95, 100)  # road
    img[h // 8 : h // 2, : w // 3] = (170, 120, 90)  # building
    yy, xx = np.mgrid[:h, :w]
    tree = (yy - h * 0.3) ** 2 + (xx - w * 0.8) ** 2 < (h * 0.14) ** 2
    img[tree] = (40, 130, 50)  # tree crown
    img[int(h * 0.62) : int(h * 0.8), int(w * 0.1) : int(w * 0.35)] = (200, 30, 35)  # red car
    img[int(h * 0.6) : int(h * 0.75), int(w * 0.6) : int(w * 0.8)] = (40, 60, 200)  # blue car
    return img


def main_part(mask):
    """The 4-connected part of a bool mask around its deepest pixel (PIL flood fill)."""
    from PIL import Image, ImageDraw

    from ovseg.grounding import grasp_point

    canvas = Image.fromarray(mask.astype(np.uint8) * 255).copy()  # a buffer of its own
    ImageDraw.floodfill(canvas, grasp_point(mask), 128)
    return np.asarray(canvas) == 128


def demo_frame(min_pixels=300):
    """(image, objects): the first CamVid frame and its ground-truth objects (name -> bool
    (H, W): per class, the connected part around its deepest pixel, and a second part named
    "<class> 2" when one is left), or the generated scene and its layout."""
    if CAMVID is None:
        image = street_scene()
        colours = {
            "sky": (135, 190, 235),
            "building": (170, 120, 90),
            "road": (95, 95, 100),
            "tree": (40, 130, 50),
            "car": (200, 30, 35),
            "car 2": (40, 60, 200),
        }
        return image, {k: (image == c).all(-1) for k, c in colours.items()}
    from PIL import Image

    name = sorted((CAMVID / "images").glob("*.png"))[0].name
    image = ovseg.load_image(CAMVID / "images" / name)
    truth = np.asarray(Image.open(CAMVID / "labels" / name))
    classes = [c for c in (CAMVID / "classes.txt").read_text().splitlines() if c.strip()]
    objects = {}
    for i, c in enumerate(classes):
        rest = truth == i
        for key in (c, f"{c} 2"):
            if rest.sum() < min_pixels:
                break
            part = main_part(rest)
            if part.sum() >= min_pixels:
                objects[key] = part
            rest = rest & ~part
    return image, objects


CAMVID = find_camvid()
print("models:", MODELS, "| CamVid:", CAMVID or "not found (a generated image is used)")
