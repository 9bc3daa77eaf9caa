# ruff: noqa  (a notebook source: its names come from the shared setup cell; ruff checks
# the built notebooks/*.ipynb instead)
# %% [markdown]
# # 05 · Video: stable object ids, and monitoring zones of a scene
#
# `ovseg.video.segment_video(segmenter, frames, classes, **options)` yields one
# `SegmentationResult` per frame; each object's segment carries a `track_id` that stays the
# same across frames.
# Keyframes (every `keyframe_every` frames) get the full segmentation: the dense method's map
# and SAM's automatic grid; between them each object's mask is propagated by prompting SAM
# with its previous box and mask. New objects found on keyframes get new ids; an object's class
# is the running mean of its probabilities, so labels do not flicker. Classes named as `stuff`
# (road, sky) come from each frame's map and are never tracked.
#
# Then a **monitoring** recipe (`demos/monitor.py`): zones drawn on the first frame learn
# which classes occupy them over the first frames, and a class entering a zone it never
# occupied raises an alert, with the frame saved.
#
# > **What the tiny models can show.** With the default `tiny-random` models (random weights)
# > the masks, classes and therefore the alerts below are **meaningless**; the notebook shows
# > the API and the machinery. Change the marked `MODELS` line for real results.

# %% setup

# %% [markdown]
# ## A clip
# Six consecutive frames of one CamVid drive (downscaled to 240x180 to stay quick), or a
# generated street with a car driving across when CamVid is absent.

# %%
from PIL import Image

if CAMVID is not None:
    files = sorted((CAMVID / "images").glob("*.png"))[:6]
    clip = [np.asarray(Image.open(f).convert("RGB").resize((240, 180))) for f in files]
else:
    clip = []
    for i in range(6):
        frame = street_scene(180, 240)
        frame[120:150, 10 + 25 * i : 60 + 25 * i] = (200, 30, 35)
        clip.append(frame)
CLASSES = ["road", "car", "person", "sky", "building"]
STUFF = ["road", "sky"]
print(len(clip), "frames of", clip[0].shape)

# %% [markdown]
# ## Segment it: one result per frame, objects with ids
# `segment_video` takes a video file, a folder of frames, a camera index or any iterable of
# images (a generator for streams); memory stays bounded. `VideoStream.step(frame)` is the
# same, one frame at a time, for robots and cameras.

# %%
from ovseg.proposals.grid import GridOptions
from ovseg.video import segment_video

segmenter = ovseg.Segmenter(**MODELS, grid=GridOptions(**GRID) if GRID else None)
results = list(segment_video(segmenter, clip, CLASSES, stuff=STUFF, keyframe_every=3))
for i, r in enumerate(results):
    objects = [(s.track_id, CLASSES[s.class_index]) for s in r.segments if s.track_id]
    print(f"frame {i}: objects {objects}")

# %% [markdown]
# Each frame's overlay with every object's box, id and class (what `ovseg video` encodes
# into `overlay.mp4`).

# %%
from ovseg.video.outputs import frame_record, render_overlay

fig, axes = plt.subplots(2, 3, figsize=(12, 6))
for i, (ax, r) in enumerate(zip(axes.ravel(), results)):
    record = frame_record(i, r)
    ax.imshow(render_overlay(clip[i], r.label_map, CLASSES, record["objects"]))
    ax.set_title(f"frame {i}{' (keyframe)' if i % 3 == 0 else ''}")
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Ids over time
# Which object ids are present on which frame: a stable id is one unbroken row.

# %%
ids = sorted({s.track_id for r in results for s in r.segments if s.track_id})
presence = np.array([[any(s.track_id == t for s in r.segments) for r in results] for t in ids])
fig, ax = plt.subplots(figsize=(6, 0.4 * len(ids) + 1))
ax.imshow(presence, aspect="auto", cmap="Greens", vmin=0, vmax=1)
ax.set_yticks(range(len(ids)), [f"#{t}" for t in ids])
ax.set_xlabel("frame")
ax.set_title("object ids per frame")
plt.show()

# %% [markdown]
# ## Monitoring: zones, a baseline, alerts
# A zone over the lower third of the frame (say, the road or the tracks). The first three
# frames are the baseline: the classes seen in the zone then are normal. Later, a class that
# enters the zone and was never there before raises an alert. The same logic runs from the
# command line: `python demos/monitor.py VIDEO --classes ... --zones '{"tracks": [...]}'`.

# %%
import sys

sys.path.insert(0, str(Path.cwd().parent / "demos"))
from monitor import ZoneMonitor, draw_alert, zone_masks

h, w = clip[0].shape[:2]
zones = {"lower third": [[0, 2 * h // 3], [w - 1, 2 * h // 3], [w - 1, h - 1], [0, h - 1]]}
monitor = ZoneMonitor(zone_masks(zones, (h, w)), CLASSES, baseline_frames=3, min_fraction=0.02)
alerts = [a for i, r in enumerate(results) for a in monitor.update(i, r)]
print("baseline:", {z: [CLASSES[c] for c in sorted(s)] for z, s in monitor.baseline.items()})
for a in alerts:
    print(f"ALERT frame {a.frame}: {a.class_name} entered {a.zone} ({100 * a.fraction:.0f}%)")
shown = alerts[0].frame if alerts else len(results) - 1
plt.figure(figsize=(6, 4.5))
plt.imshow(draw_alert(results[shown], zones, [a for a in alerts if a.frame == shown]))
plt.title(f"frame {shown}: {'alert' if alerts else 'no alert'}")
plt.axis("off")
plt.show()
