"""Video: open-vocabulary segmentation of clips and streams with stable object ids.

Keyframes get the full segmentation (the dense method and SAM's automatic grid); between
them each object's mask is propagated (SAM prompted from its previous box and mask); new
objects found on keyframes get new ids, matched to existing ones by mask IoU; an object's class
is the running mean of its probabilities. See :mod:`ovseg.video.stream`.

>>> from ovseg.video import segment_video
>>> seg = ovseg.Segmenter(sam="vit_b")
>>> for result in segment_video(seg, "drive.mp4", ["road", "car", "person"], stuff=["road"]):
...     [s.track_id for s in result.segments]
"""

from ovseg.video.io import FrameSource, VideoWriter, open_frames
from ovseg.video.propagate import Propagator, SamPromptPropagator
from ovseg.video.stream import Track, VideoStream, segment_video

__all__ = [
    "FrameSource",
    "Propagator",
    "SamPromptPropagator",
    "Track",
    "VideoStream",
    "VideoWriter",
    "open_frames",
    "segment_video",
]
