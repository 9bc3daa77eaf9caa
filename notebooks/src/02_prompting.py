# ruff: noqa  (a notebook source: its names come from the shared setup cell; ruff checks
# the built notebooks/*.ipynb instead)
# %% [markdown]
# # 02 · Prompting: points, boxes, scribbles, and how the labels follow
#
# Without prompts, ovseg proposes masks over an automatic grid. With prompts you choose the
# pixels and the vocabulary chooses the names: **points** `(x, y)` (1 = on the object,
# 0 = not on it), **boxes** `(x0, y0, x1, y1)` (one object per box), **scribbles** (bool
# strokes drawn on the object) and **rough masks**. SAM embeds the image once; every further
# prompt on the same image costs only its small mask decoder.
#
# > **What the tiny models can and cannot show.** With the default `tiny-random` models
# > (random weights) the masks do not follow object outlines and the class names are
# > meaningless. What *does* hold, and what this notebook demonstrates, is the contract: which
# > prompt gives how many masks, that only prompted pixels get labels, that the same prompt
# > with another vocabulary gets other names, and that the image is embedded once. Change the
# > marked `MODELS` line for real results.

# %% setup

# %% [markdown]
# ## The image and where its objects are
# For CamVid the prompt locations come from the frame's ground truth (the part of each class
# around its deepest pixel); for the generated scene, from its layout. `grasp_point` gives a
# pixel well inside a mask.

# %%
from ovseg.grounding import grasp_point

image, objects = demo_frame()
print("objects:", {name: int(mask.sum()) for name, mask in objects.items()})


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


CAR_POINT = grasp_point(objects["car"])
ROAD_POINT = grasp_point(objects["road"])
BOXES = [box_of(objects[name]) for name in ("car", "building", "tree") if name in objects]
print("car point", CAR_POINT, "road point", ROAD_POINT, "boxes", BOXES)

segmenter = ovseg.Segmenter(**MODELS)
segmenter.set_image(image)  # embeds once; later prompts reuse the embedding
print("encoder calls so far:", segmenter.proposer.encoder_calls)

# %% [markdown]
# ## Points
# One positive point gives SAM's three candidates and keeps the one with the highest predicted
# IoU. A negative point (label 0) tells SAM what is *not* the object.

# %%
one = segmenter.propose(points=[CAR_POINT])
two = segmenter.propose(points=[CAR_POINT, ROAD_POINT], point_labels=[1, 0])
print("masks:", len(one), len(two), "| predicted IoU:", one.scores.round(3), two.scores.round(3))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, masks, title in ((axes[0], one, "positive point"), (axes[1], two, "+ negative point")):
    ax.imshow(image)
    ax.imshow(masks.masks[0], alpha=0.45, cmap="autumn")
    ax.plot(*CAR_POINT, "g*", markersize=16, markeredgecolor="w")
    ax.set_title(title)
    ax.axis("off")
axes[1].plot(*ROAD_POINT, "rX", markersize=12, markeredgecolor="w")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## How the labels follow the prompt
# `segment` with a prompt labels **only the prompted object**; every other pixel stays
# `ovseg.UNLABELED`. The vocabulary names it.

# %%
CLASSES = ["car", "road", "building", "tree", "sky"]
by_point = segmenter.segment(image, CLASSES, points=[CAR_POINT])
labelled = by_point.label_map != ovseg.UNLABELED
print("labelled pixels:", int(labelled.sum()), "of", labelled.size)
for s in by_point.segments:
    print(f"segment {s.id}: {by_point.classes[s.class_index]!r} score {s.score:.2f} box {s.box}")
display(by_point.overlay())

# %% [markdown]
# ## Boxes
# Several boxes give one mask each, decoded in one batch; each is labelled on its own.

# %%
by_boxes = segmenter.segment(image, CLASSES, boxes=BOXES)
print(len(BOXES), "boxes ->", len(by_boxes.segments), "segments")
for s in by_boxes.segments:
    print(f"  {by_boxes.classes[s.class_index]:10s} score {s.score:.2f} box {s.box}")

# %% [markdown]
# ## Scribbles and rough masks
# A scribble is a bool `(H, W)` array of strokes on the object (points are sampled along it);
# a rough mask (`mask_input`) is a coarse outline SAM refines.

# %%
h, w = image.shape[:2]
x, y = CAR_POINT
scribble = np.zeros((h, w), bool)
scribble[max(y - 2, 0) : y + 2] = objects["car"][max(y - 2, 0) : y + 2]  # a stroke across it
rough = np.zeros((h, w), bool)
x0, y0, x1, y1 = box_of(objects["car"])
rough[y0:y1, x0:x1] = True  # its box, filled: a very rough mask

by_scribble = segmenter.segment(image, CLASSES, scribble=scribble)
by_rough = segmenter.segment(image, CLASSES, mask_input=rough)

panels = [
    ("point", by_point, None),
    ("boxes", by_boxes, None),
    ("scribble", by_scribble, scribble),
    ("rough mask", by_rough, rough),
]
fig, axes = plt.subplots(1, 4, figsize=(18, 4))
for ax, (title, result, drawn) in zip(axes, panels, strict=True):
    ax.imshow(result.overlay(legend=False))
    if drawn is not None:
        ax.contour(drawn, levels=[0.5], colors="cyan", linewidths=1.5)
    if title == "point":
        ax.plot(*CAR_POINT, "g*", markersize=14, markeredgecolor="w")
    if title == "boxes":
        for bx0, by0, bx1, by1 in BOXES:
            ax.add_patch(plt.Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, ec="cyan"))
    names = sorted({result.classes[s.class_index] for s in result.segments})
    ax.set_title(f"{title}: {', '.join(names) or 'nothing'}")
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Same pixels, another vocabulary
# Prompts fix the pixels, the vocabulary fixes the names: the same box proposals scored
# against two class lists (`Segmenter.score` gives the (N, K) class probabilities). A
# `score_threshold` leaves masks whose best class probability is below it unlabelled, and
# `background` names compete without labelling anything.

# %%
proposals = segmenter.propose(boxes=BOXES)
for vocabulary in (CLASSES, ["vehicle; automobile", "plant", "house"]):
    probabilities = segmenter.score(proposals, vocabulary)
    names = [vocabulary[k].split(";")[0] for k in probabilities.argmax(1)]
    print(f"{str(vocabulary):58s} -> {names}")

strict = segmenter.segment(image, CLASSES, boxes=BOXES, score_threshold=0.5)
with_bg = segmenter.segment(image, ["car"], boxes=BOXES, background=["road", "building", "tree"])
for title, result in (("threshold 0.5", strict), ("car vs background", with_bg)):
    names = [f"{result.classes[s.class_index]} ({s.score:.2f})" for s in result.segments]
    print(
        f"{title:18s} segments: {names}, labelled pixels: "
        f"{int((result.label_map != ovseg.UNLABELED).sum())}"
    )

# %% [markdown]
# ## The image was embedded once
# Every prompt above reused the cached SAM embedding.

# %%
print("encoder calls:", segmenter.proposer.encoder_calls)
