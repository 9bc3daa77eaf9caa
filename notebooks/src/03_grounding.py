# ruff: noqa  (a notebook source: its names come from the shared setup cell; ruff checks
# the built notebooks/*.ipynb instead)
# %% [markdown]
# # 03 · Language grounding experiments
#
# `ovseg.grounding.ground(image, phrase)` finds the region a referring phrase names: it scores
# candidate regions with the segmenter's CLIP region scorer and returns a `GroundingResult`
# (best region's `mask`, `box`, `score`, grasp `point`, and every candidate ranked). This
# notebook runs the experiments researchers ask for: referring phrases, several phrases at
# once, category-then-attribute, negatives, thresholds, prompt templates, similarity heatmaps,
# grasp points, and failure cases, with side-by-side figures.
#
# **Scores.** `similarity` is the cosine between region and phrase embeddings; `score` is the
# phrase's probability in a softmax (CLIP's logit scale) over the phrase, the negatives and
# the background names (default `["background"]`). Candidates are ranked by score.
#
# > **What the tiny models can and cannot show.** With the default `tiny-random` models
# > (random weights) every grounding below is **meaningless**: which region wins is noise, and
# > the "hit rate" is chance. The notebook shows the API, the scoring rules (which you can
# > verify on the numbers), and an experiment harness whose numbers become meaningful when
# > you change the marked `MODELS` line to real models.

# %% setup

# %% [markdown]
# ## Candidates
# To study the language side apart from the proposals, the candidates here are hand-made: the
# frame's ground-truth objects (for CamVid, per class the part around its deepest pixel, and a
# second part when there is one). So we know which candidate each phrase *should* pick.
# Candidates can also be SAM proposals: the automatic grid (the default), or prompts.

# %%
from ovseg.grounding import ground, heatmap

image, objects = demo_frame()
NAMES = list(objects)
CANDIDATES = np.stack([objects[n] for n in NAMES])  # bool (N, H, W)
segmenter = ovseg.Segmenter(**MODELS)
print(len(NAMES), "candidates:", NAMES)

# %% [markdown]
# ## One referring phrase

# %%
result = ground(image, "the car", candidates=CANDIDATES, segmenter=segmenter)
best = result.best
print(
    f"best: candidate {best.index} ({NAMES[best.index]!r}) score {best.score:.3f} "
    f"cosine {best.similarity:.3f}"
)
print("box (x0, y0, x1, y1):", result.box, "| grasp point (x, y):", result.point)
display(result.overlay())

# %% [markdown]
# ## The ranked candidates
# `result.candidates` holds every eligible candidate, best first; scores never increase down
# the list.

# %%
for r in result.candidates:
    print(f"{NAMES[r.index]:14s} score {r.score:.3f}  cosine {r.similarity:+.3f}")
fig, ax = plt.subplots(figsize=(9, 3))
ax.bar([NAMES[r.index] for r in result.candidates], result.scores, color="tab:blue")
ax.set_ylabel("score")
ax.set_title('"the car": candidates ranked by score')
ax.tick_params(axis="x", rotation=45)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Several phrases at once: a small grounding benchmark
# A list of phrases shares one set of candidates and region embeddings. Each phrase has the
# candidate it should pick; the hit rate is the experiment's number (chance with tiny models).

# %%
TARGETS = {
    "the car": "car",
    "the road": "road",
    "the sky": "sky",
    "a tree": "tree",
    "a building": "building",
    "the sidewalk": "pavement",
    "a cyclist": "bicyclist",
}
TARGETS = {p: t for p, t in TARGETS.items() if t in NAMES}
results = ground(image, list(TARGETS), candidates=CANDIDATES, segmenter=segmenter)
hits = [NAMES[r.best.index] == TARGETS[r.phrase] for r in results]
print(f"hit rate {sum(hits)}/{len(hits)} (chance ~ 1/{len(NAMES)})")

fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.4))
for ax, r, hit in zip(axes, results, hits, strict=True):
    ax.imshow(r.overlay(label=False))
    ax.set_title(
        f"{r.phrase!r}\n-> {NAMES[r.best.index]} {r.score:.2f} {'hit' if hit else 'miss'}",
        fontsize=9,
    )
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Category, then attribute
# `category="car"` keeps the candidates whose best entry among the category, the
# `distractors` and the background is the category; the phrase ("dark car", or just "dark")
# then ranks those. `rejected` says why each other candidate left.

# %%
DISTRACTORS = ["road", "building", "tree", "sky", "person"]
for phrase in ("dark car", "silver car", "red car"):
    r = ground(
        image,
        phrase,
        category="car",
        distractors=DISTRACTORS,
        candidates=CANDIDATES,
        segmenter=segmenter,
    )
    kept = [f"{NAMES[c.index]} ({c.score:.2f})" for c in r.candidates]
    print(f"{phrase!r:13s} kept {kept}; best {NAMES[r.best.index] if r.found else None}")
print("rejected (first 5):", {NAMES[i]: why for i, why in list(r.rejected.items())[:5]})

# %% [markdown]
# ## Negatives
# Negative names join the softmax (a region that resembles one scores lower) and, by default,
# a region for which a negative is more similar than the phrase is dropped. With
# `drop_negatives=False` they only down-weight.

# %%
plain = ground(image, "a vehicle", candidates=CANDIDATES, segmenter=segmenter)
dropped = ground(
    image, "a vehicle", negatives=["bicycle", "person"], candidates=CANDIDATES, segmenter=segmenter
)
soft = ground(
    image,
    "a vehicle",
    negatives=["bicycle", "person"],
    drop_negatives=False,
    candidates=CANDIDATES,
    segmenter=segmenter,
)
print("dropped (first 5):", {NAMES[i]: why for i, why in list(dropped.rejected.items())[:5]})
before = {c.index: c.score for c in plain.candidates}
for c in soft.candidates:
    print(f"{NAMES[c.index]:14s} {before[c.index]:.3f} -> {c.score:.3f} with negatives")

# %% [markdown]
# ## Thresholds: every region above a score
# `threshold=None` answers the best region; a number answers every candidate with
# `score >= threshold` (possibly none).

# %%
scores = ground(image, "the road", candidates=CANDIDATES, segmenter=segmenter).scores
cut = float(np.median(scores))
above = ground(image, "the road", threshold=cut, candidates=CANDIDATES, segmenter=segmenter)
print(
    f"threshold {cut:.3f}: {len(above.matches)} of {len(above.candidates)} candidates:",
    [NAMES[m.index] for m in above.matches],
)
display(above.overlay(label=False))

# %% [markdown]
# ## Prompt templates
# Each phrase is embedded as the mean over prompt templates. `imagenet` is CLIP's 80-template
# ensemble, `simple` its 7-template subset, `photo` is `"a photo of a {}."`, `none` the bare
# phrase; a list of strings with one `{}` each works too. Articles in the phrase read oddly in
# templates ("a photo of a the car."), one reason to compare.

# %%
from ovseg.scoring.vocabulary import template_sets

TEMPLATE_CHOICES = [*template_sets(), ["a photo of {}, seen from a car."]]
table = {}
for templates in TEMPLATE_CHOICES:
    r = ground(image, "car", templates=templates, candidates=CANDIDATES, segmenter=segmenter)
    label = templates if isinstance(templates, str) else "custom"
    table[label] = {NAMES[c.index]: c.score for c in r.candidates}
    print(f"{label:9s} best {NAMES[r.best.index]:12s} score {r.score:.3f}")

fig, ax = plt.subplots(figsize=(11, 3))
width = 0.8 / len(table)
for k, (label, row) in enumerate(table.items()):
    ax.bar(np.arange(len(NAMES)) + k * width, [row[n] for n in NAMES], width, label=label)
ax.set_xticks(np.arange(len(NAMES)) + 0.4 - width / 2, NAMES, rotation=45)
ax.set_ylabel('score of "car"')
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Similarity heatmaps
# `heatmap(image, phrase)` scores the patch features of one dense CLIP pass
# (`DenseScorer.feature_map`) and upsamples them to the image: float32 `(H, W)` in [0, 1].
# `mode="softmax"` is the phrase's probability against the background per patch (comparable
# across images); `mode="minmax"` rescales the cosine over this image (relative).

# %%
PHRASES = ["car", "road", "sky", "tree"]
soft_maps = heatmap(image, PHRASES, segmenter=segmenter)
rel_maps = heatmap(image, PHRASES, mode="minmax", segmenter=segmenter)
fig, axes = plt.subplots(2, len(PHRASES) + 1, figsize=(3.4 * (len(PHRASES) + 1), 5))
for row, (maps, mode) in enumerate(((soft_maps, "softmax"), (rel_maps, "minmax"))):
    axes[row, 0].imshow(image)
    axes[row, 0].set_title(f"image ({mode})")
    for ax, phrase, m in zip(axes[row, 1:], PHRASES, maps, strict=True):
        ax.imshow(image)
        ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{phrase!r}: {m.min():.2f}..{m.max():.2f}", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Grasp points
# `point` is `(x, y)` in image pixels: the mask pixel farthest from the mask border (depth by
# repeated erosion, ties to the centre), so it is always on the object, even for a ring or a
# crescent whose centroid is not.

# %%
fig, ax = plt.subplots(figsize=(7, 5))
ax.imshow(image)
for r in results:
    x, y = r.point
    ax.contour(r.mask, levels=[0.5], linewidths=1)
    ax.plot(x, y, "w+", markersize=14, markeredgewidth=2)
    ax.annotate(r.phrase, (x, y), color="w", fontsize=8, xytext=(4, 4), textcoords="offset points")
ax.axis("off")
plt.show()

# %% [markdown]
# ## Automatic proposals
# Without `candidates=`, the candidates are SAM's automatic grid (grid options such as
# `points_per_side` pass through). Tiny random SAM gives a few near-whole-image blobs, so this
# only shows the call.

# %%
auto = ground(image, "the car", segmenter=segmenter, **GRID)
print(len(auto.candidates), "proposals; best box", auto.box, "score", round(auto.score, 3))

# %% [markdown]
# ## Failure cases
# **No candidates** is an error (nothing to rank); **everything filtered** is an empty answer.

# %%
try:
    ground(
        image,
        "the car",
        segmenter=segmenter,
        points_per_side=2,
        pred_iou_thresh=1.0,
        stability_score_thresh=1.0,
    )
except ValueError as e:
    print("ValueError:", e)
none = ground(image, "the car", threshold=0.999, candidates=CANDIDATES, segmenter=segmenter)
print("found:", none.found, "| mask:", none.mask, "| candidates ranked:", len(none.candidates))

# %% [markdown]
# **What CLIP region scores cannot do, even with real weights:**
#
# - *Spatial relations.* A region is scored from its own crop (with a little context), not
#   from where it sits, so "the car on the left" and "the car on the right" rank nearly
#   alike. Resolve such words with geometry over the category's candidates (below).
# - *Negation and word order.* CLIP text embeddings largely ignore them: "not a car" lands
#   near "a car". Use `negatives=` instead of negating the phrase.
# - *Small things in heatmaps.* One patch of the dense pass covers 16x16 pixels of the
#   resized image; objects smaller than that blur into their surroundings.
# - *Counting* ("the second car") and relations between objects ("the cup next to the
#   laptop") need reasoning outside the region scores.

# %%
from ovseg.scoring.vocabulary import Vocabulary

left = ground(image, "the car on the left", candidates=CANDIDATES, segmenter=segmenter)
right = ground(image, "the car on the right", candidates=CANDIDATES, segmenter=segmenter)
print("left :", [NAMES[c.index] for c in left.candidates[:3]])
print("right:", [NAMES[c.index] for c in right.candidates[:3]])

cars = ground(
    image,
    "car",
    category="car",
    distractors=DISTRACTORS,
    candidates=CANDIDATES,
    segmenter=segmenter,
)
if cars.candidates:
    leftmost = min(cars.candidates, key=lambda c: (c.box[0] + c.box[2]) / 2)
    print("geometry: the leftmost car-like candidate is", NAMES[leftmost.index], leftmost.box)
else:
    print("geometry: no candidate passed the category test")

text = Vocabulary(["a car", "not a car", "a tree"], "photo").text_embeddings(segmenter.clip)
print(
    f"text cosine 'a car'~'not a car': {float(text[0] @ text[1]):.3f}, "
    f"'a car'~'a tree': {float(text[0] @ text[2]):.3f}"
)
