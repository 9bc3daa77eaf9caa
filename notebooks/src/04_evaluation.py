# ruff: noqa  (a notebook source: its names come from the shared setup cell; ruff checks
# the built notebooks/*.ipynb instead)
# %% [markdown]
# # 04 · Evaluation: mIoU on CamVid
#
# `ovseg.eval` reads benchmarks in their standard layouts, accumulates a confusion matrix and
# reports mIoU, per-class IoU, frequency-weighted IoU and accuracies (JSON, markdown and a
# confusion plot). This notebook evaluates on the CamVid validation folder
# (`../shared/data/camvid-val` from the repository root; a small generated dataset stands in
# when it is absent) three ways:
#
# - a **constant baseline** ("road everywhere"), to read the numbers against;
# - the **oracle**: SAM's proposals, each labelled with its majority ground-truth class, then
#   the usual fusion. It is the ceiling the proposals allow, with no CLIP at all;
# - the **model**: NACLIP's dense map (the default method) against CamVid's class names.
#
# > **What the tiny models can and cannot show.** With the default `tiny-random` models the
# > proposals are a few near-whole-image blobs and CLIP's labels are random, so the oracle
# > sits near the share of the largest class and the model near chance: **the numbers say
# > nothing about ovseg's quality.** The notebook shows the evaluation API, the report and
# > the figures on a few frames (`LIMIT`). Change the marked `MODELS` line for real results;
# > `LIMIT` then becomes the whole split.

# %% setup

# %% [markdown]
# ## The dataset

# %%
import json
import tempfile

from PIL import Image

from ovseg.eval import ConfusionMatrix, open_dataset
from ovseg.eval.runner import evaluate
from ovseg.viz import colorize


def toy_dataset(root, n=3):
    """A tiny folder dataset (images/, labels/, classes.txt) of generated scenes."""
    classes = ["sky", "building", "road", "tree", "car"]
    colours = [(135, 190, 235), (170, 120, 90), (95, 95, 100), (40, 130, 50), (200, 30, 35)]
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i in range(n):
        image = np.roll(street_scene(), 20 * i, axis=1)
        label = np.full(image.shape[:2], 255, np.uint8)
        for k, colour in enumerate(colours):
            label[(image == colour).all(-1)] = k
        Image.fromarray(image).save(root / "images" / f"scene{i}.png")
        Image.fromarray(label).save(root / "labels" / f"scene{i}.png")
    return root


WORK = Path(tempfile.mkdtemp(prefix="ovseg-eval-"))
DATA = CAMVID if CAMVID is not None else toy_dataset(WORK / "toy")
dataset = open_dataset(DATA)
LIMIT = 4 if TINY else None  # frames to evaluate (None: all)
COUNT = len(dataset) if LIMIT is None else min(LIMIT, len(dataset))
print(f"{dataset.kind}: {len(dataset)} frames, evaluating {COUNT}")
print("classes:", dataset.classes)
print("prompts:", dataset.prompts)

sample = dataset[0]
shown = np.where(sample.label == dataset.ignore_index, -1, sample.label)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].imshow(sample.image)
axes[0].set_title(sample.name)
axes[1].imshow(colorize(shown, len(dataset.classes)))
axes[1].set_title("ground truth (black: ignored)")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A constant baseline, with the metrics alone
# `ConfusionMatrix` counts pixels (rows: truth, columns: prediction, plus a last column for
# unlabelled pixels); ignored pixels are skipped.

# %%
road = dataset.classes.index("road")
baseline = ConfusionMatrix(len(dataset.classes), dataset.ignore_index)
for i in range(COUNT):
    label = dataset.load_label(i)
    baseline.update(np.full(label.shape, road), label)
base = baseline.scores()
print(
    f"road everywhere: mIoU {100 * base['miou']:.1f}  pixel accuracy "
    f"{100 * base['pixel_accuracy']:.1f}"
)

# %% [markdown]
# ## Oracle and model runs
# `evaluate` writes a JSON report, a markdown summary, a confusion plot, and caches the
# predictions next to the report (a rerun resumes). Passing the `segmenter` reuses its models.
# The command line does the same:
#
# ```
# ovseg eval --data ../shared/data/camvid-val --sam tiny-random --clip tiny-random \
#     --scorer oracle --limit 4 --points-per-side 8 --pred-iou-thresh 0 \
#     --stability-score-thresh 0 --out runs/camvid_oracle.json
# ```

# %%
segmenter = ovseg.Segmenter(**MODELS)
runs = {}
options = {"oracle": dict(scorer="oracle", grid=GRID), "naclip": dict(method="naclip")}
for name, extra in options.items():
    runs[name] = evaluate(
        DATA,
        WORK / f"{name}.json",
        sam=MODELS["sam"],
        clip=MODELS["clip"],
        limit=LIMIT,
        segmenter=segmenter,
        progress=False,
        **extra,
    )
    report = runs[name]
    print(
        f"{name:7s} mIoU {100 * report['miou']:5.1f}  fwIoU {100 * report['fwiou']:5.1f}  "
        f"pixel acc. {100 * report['pixel_accuracy']:5.1f}  ({report['seconds']:.1f} s)"
    )
print("files:", json.dumps(runs["naclip"]["files"], indent=1))
print(Path(runs["naclip"]["files"]["markdown"]).read_text()[:600])

# %% [markdown]
# ## Per-class IoU

# %%
rows = {
    "road everywhere": dict(zip(dataset.classes, base["iou"], strict=True)),
    "oracle (proposal ceiling)": runs["oracle"]["per_class_iou"],
    "model (NACLIP dense map)": runs["naclip"]["per_class_iou"],
}
x = np.arange(len(dataset.classes))
width = 0.8 / len(rows)
fig, ax = plt.subplots(figsize=(12, 3.8))
for k, (label, per_class) in enumerate(rows.items()):
    values = [
        np.nan_to_num(per_class[c] if per_class[c] is not None else np.nan) * 100
        for c in dataset.classes
    ]
    ax.bar(x + k * width, values, width, label=label)
ax.set_xticks(x + 0.4 - width / 2, dataset.classes, rotation=45)
ax.set_ylabel("IoU (%)")
ax.set_title(f"per-class IoU on {COUNT} {dataset.kind} frames")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Confusion matrices
# Row-normalised: each row shows where the pixels of one true class went; the last column is
# pixels left unlabelled.

# %%
fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), layout="constrained")
for ax, scorer in zip(axes, ("oracle", "naclip"), strict=True):
    report = runs[scorer]
    matrix = np.asarray(report["confusion_matrix"], float)
    totals = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), report["confusion_columns"], rotation=90)
    ax.set_yticks(range(matrix.shape[0]), dataset.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{scorer}: mIoU {100 * report['miou']:.1f}")
fig.colorbar(im, ax=axes, fraction=0.025, label="fraction of the true class")
plt.show()

# %% [markdown]
# The report also carries its own confusion plot (`*_confusion.png`), written with
# matplotlib's Agg backend for headless runs:

# %%
display(Image.open(runs["oracle"]["files"]["plot"]))
