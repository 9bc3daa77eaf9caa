# ruff: noqa  (a notebook source: its names come from the shared setup cell; ruff checks
# the built notebooks/*.ipynb instead)
# %% [markdown]
# # 01 · Quickstart: segment an image with an open vocabulary
#
# ovseg segments an image into **any list of class names**: SAM proposes class-agnostic masks,
# CLIP scores each mask against the names, and a fusion step turns the scored masks into one
# label map (`int32`, `ovseg.UNLABELED = -1` where no class fits).
#
# > **What this notebook can show with the tiny models.** By default it runs with
# > `tiny-random` SAM and CLIP: the real architectures at a tiny size with **random weights**.
# > They run in seconds on a CPU and exercise every step (proposals, scoring, fusion, overlay,
# > export), but **their masks and labels are meaningless**: the picture below is not a
# > segmentation, it shows the API and the plumbing. For real results change the one marked
# > `MODELS` line in the next cell to `dict(sam="vit_b", clip="ViT-B-16/openai")` (needs the
# > weights: `ovseg weights download vit_b`).

# %% setup

# %% [markdown]
# ## An image
# The first CamVid validation frame when `../shared/data/camvid-val` exists (from the
# repository root), otherwise a generated street scene.

# %%
if CAMVID is not None:
    image_path = sorted((CAMVID / "images").glob("*.png"))[0]
    image = ovseg.load_image(image_path)
    print("CamVid frame", image_path.name)
else:
    image = street_scene()
print("image:", image.shape, image.dtype)

# %% [markdown]
# ## Segment
# A `Segmenter` holds the models; build it once and reuse it. By default its dense method
# (NACLIP, computed exactly as its paper's code) gives every pixel a class; SAM is loaded only
# for prompts. Class names may carry synonyms separated by `;` (the class scores the best of
# them).

# %%
segmenter = ovseg.Segmenter(**MODELS)
CLASSES = [
    "sky",
    "building",
    "road; street",
    "pavement; sidewalk",
    "tree",
    "car",
    "pedestrian; person",
]
result = segmenter.segment(image, CLASSES)

print(
    "label_map:",
    result.label_map.shape,
    result.label_map.dtype,
    "values:",
    np.unique(result.label_map).tolist(),
)
print("segments:", len(result.segments))
for name, fraction in sorted(result.areas().items(), key=lambda kv: -kv[1]):
    print(f"  {name:22s} {100 * fraction:5.1f} % of the pixels")

# %% [markdown]
# ## Overlay
# Class colours blended on the image, with a legend of the classes present.

# %%
display(result.overlay(alpha=0.5))

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
axes[0].imshow(image)
axes[0].set_title("image")
axes[1].imshow(result.overlay(legend=False))
axes[1].set_title("labels")
im = axes[2].imshow(result.confidence, vmin=0, vmax=1, cmap="magma")
axes[2].set_title("confidence (class probability)")
fig.colorbar(im, ax=axes[2], fraction=0.035)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Segments
# Each kept mask becomes a `Segment`: the pixels it owns in the fused map, its class, its
# score (class probability) and its box `(x0, y0, x1, y1)` with `x1, y1` exclusive.

# %%
for seg in sorted(result.segments, key=lambda s: -s.area)[:8]:
    print(
        f"#{seg.id:<3d} {result.classes[seg.class_index]:22s} score {seg.score:.2f} "
        f"box {seg.box} area {seg.area}"
    )

# %% [markdown]
# ## Export
# `save` writes a palette PNG (class `i` -> value `i`, unlabeled -> 255), the overlay, and a
# COCO-style JSON with one RLE mask per segment. All writes are atomic.

# %%
import json
import tempfile

from ovseg.result import read_label_png

out_dir = Path(tempfile.mkdtemp(prefix="ovseg-quickstart-"))
files = result.save(out_dir, "frame")
for kind, path in files.items():
    print(f"{kind:8s} {path} ({path.stat().st_size} bytes)")

labels = read_label_png(files["labels"])
coco = json.loads(files["json"].read_text())
print("PNG round trip equal:", np.array_equal(labels, result.label_map))
print(
    "COCO annotations:",
    len(coco["annotations"]),
    "categories:",
    [c["name"] for c in coco["categories"]],
)

# %% [markdown]
# ## One call
# `ovseg.segment` is the one-call front: it keeps a cached default `Segmenter` per model
# pair. Same input, same options, same device: same output.

# %%
again = ovseg.segment(image, CLASSES, **MODELS)
print("same label map as above:", np.array_equal(again.label_map, result.label_map))

# %% [markdown]
# **Next:** `02_prompting` (points, boxes, scribbles), `03_grounding` (referring phrases),
# `04_evaluation` (mIoU on CamVid).
