"""Mixed maps: SAM 3's instances for the object classes over a training-free method's dense map
for the stuff classes (``method="naclip+sam3"``, ``"proxyclip+sam3"``, ``"corrclip+sam3"``).
An option, not the default: it has not been measured with real weights.

A mixed method (:class:`Mixed`) holds the dense method (:attr:`Mixed.dense`) and
:class:`~ovseg.methods.sam3.Sam3`, needs what both need (CLIP, DINO... and a SAM 3 model), and
takes the dense method's options plus :class:`InstanceOptions`.

The rule, with K classes, the background class K and each class's synonyms:

1. **Stuff or object**: a class is *stuff* when one of its synonyms (compared lower-case) is in
   ``stuff`` (None: :data:`STUFF_NAMES`); every other class is an *object*. Background names
   are neither: they label nothing.
2. **The dense map**: the dense method runs on the whole vocabulary (every class and
   background name compete, so a car is not forced to be road), with its own prediction and
   last step (CorrCLIP's vote...). Its pixels of stuff classes keep their label; its pixels of
   object classes and of the background become unlabeled: objects come only from SAM 3.
3. **The instances**: SAM 3's instances of the object classes (:meth:`Sam3.instances
   <ovseg.methods.sam3.Sam3.instances>` on the object classes and the background names, with
   ``threshold``, ``mask_threshold``, ``dedup_iou``: score ``> threshold``, mask probability
   ``> mask_threshold``) are painted over that map in ascending score order (ties: SAM 3's
   order), so every instance pixel takes the class of the highest-scoring instance covering it,
   whatever the dense map said there.
4. **Confidence**: an instance pixel's confidence is its instance's score; a stuff pixel's is
   the dense probability of its class.

Per-pixel probabilities (:meth:`Mixed.probabilities`, hence ``pixel_probabilities``, heatmaps,
``refine``) are the dense method's, over the whole vocabulary (the map before step 2, as
Trident's and CorrCLIP's are the maps before their last steps); :meth:`Mixed.instances` gives
SAM 3's instances of every class (stuff included), as ``method="sam3"`` does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ovseg.methods.config import MethodConfig, int_at_least, real_in
from ovseg.methods.corrclip import CorrClip
from ovseg.methods.naclip import Naclip
from ovseg.methods.protocol import Finished, Method
from ovseg.methods.proxyclip import ProxyClip
from ovseg.methods.sam3 import Sam3, check_sam3_family
from ovseg.proposals.sam3 import Sam3Instances
from ovseg.structures import image_key

__all__ = [
    "STUFF_NAMES",
    "CorrClipSam3",
    "InstanceOptions",
    "Mixed",
    "NaclipSam3",
    "ProxyClipSam3",
    "is_stuff",
]

STUFF_NAMES = frozenset(
    """road street sidewalk pavement ground floor ceiling wall building skyscraper fence railing
    sky clouds fog vegetation tree trees bush grass leaves terrain dirt gravel mud sand snow rock
    stone hill mountain field playingfield water sea river lake railroad bridge roof carpet rug
    """.split()
)
"""Class names taken as stuff when ``stuff`` is None: amorphous regions (Cityscapes' and
COCO-Stuff's stuff classes that are not countable objects), lower-case."""


def is_stuff(entry: str, stuff) -> bool:
    """Whether the class ``entry`` (``;``-joined synonyms) is stuff: one of its synonyms,
    lower-case, is in ``stuff`` (None: :data:`STUFF_NAMES`)."""
    names = STUFF_NAMES if stuff is None else {s.strip().lower() for s in stuff}
    return any(s.strip().lower() in names for s in entry.split(";"))


@dataclass(frozen=True)
class InstanceOptions(MethodConfig):
    """The options a mixed method adds to its dense method's.

    Attributes:
        stuff: class names that are stuff (a tuple of strings), or None for
            :data:`STUFF_NAMES`; every other class is an object, found by SAM 3.
        threshold: SAM 3's instance score threshold in [0, 1].
        mask_threshold: SAM 3's mask probability threshold in [0, 1].
        dedup_iou: mask IoU in [0, 1] at which an instance of a synonym or a background name
            suppresses a lower-scoring one.
        batch_size: SAM 3 prompts per forward (>= 1).
        refine: must stay None (SAM 3 has no automatic grid).
    """

    stuff: tuple[str, ...] | None = None
    threshold: float = 0.5
    mask_threshold: float = 0.5
    dedup_iou: float = 0.5
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine is not None:
            raise ValueError(f"refine={self.refine!r} is not an option of a mixed method")
        stuff = self.stuff
        if stuff is not None:
            if isinstance(stuff, str) or not all(isinstance(s, str) and s.strip() for s in stuff):
                raise ValueError(f"stuff must be a tuple of class names or None, got {stuff!r}")
            object.__setattr__(self, "stuff", tuple(stuff))
        for name in ("threshold", "mask_threshold", "dedup_iou"):
            real_in(self, name, 0.0, 1.0)
        int_at_least(self, "batch_size", 1)


_INSTANCE_FIELDS = tuple(
    f.name for f in fields(InstanceOptions) if f.name not in {g.name for g in fields(MethodConfig)}
)


class Mixed(Method):
    """A dense method for stuff and SAM 3 for objects (see the module docstring). A subclass
    sets :attr:`dense` (the dense method's class) and ``name``; ``Config`` is made for it."""

    dense: ClassVar[type[Method]]
    finds_instances = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dense = cls.dense
        cls.needs = frozenset(dense.needs | Sam3.needs)
        cls.hints = {**dense.hints, **Sam3.hints}
        attentions = getattr(dense.Config, "ATTENTIONS", None)  # keyed by the method's name
        extra = (
            {} if attentions is None else {"ATTENTIONS": {cls.name: attentions.get(dense.name, ())}}
        )
        cls.Config = dataclass(frozen=True)(
            type(f"{cls.__name__}Config", (InstanceOptions, dense.Config), extra)
        )

    def __init__(self, **options: Any):
        self.dense_method = self.dense()
        self.sam3 = Sam3()
        self._vocabs: OrderedDict[str, Any] = OrderedDict()  # image -> its last vocabulary
        self._lock = threading.Lock()
        super().__init__(**options)

    def clear_cache(self) -> None:
        with self._lock:
            self._vocabs.clear()
        self.dense_method.clear_cache()
        self.sam3.clear_cache()

    @classmethod
    def configure(cls, dataset: str | None = None, **options: Any) -> MethodConfig:
        unknown = sorted(set(options) - set(cls.options_names()))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {cls.name!r}; its options: "
                f"{', '.join(cls.options_names())}"
            )
        extra = {k: options.pop(k) for k in _INSTANCE_FIELDS if k in options}
        base = cls.dense.configure(dataset, **options)
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        return cls.Config(**{**values, **extra, "method": cls.name})

    @classmethod
    def class_file(cls, dataset: str):
        return cls.dense.class_file(dataset)

    @classmethod
    def check_specs(cls, specs, flags: bool = False) -> None:
        """Refuse a missing model, or a SAM of another family than SAM 3."""
        super().check_specs(specs, flags)
        check_sam3_family(cls.name, specs, flags)

    def check_models(self, models) -> None:
        self.dense_method.check_models(models)
        self.sam3.check_models(models)

    def dense_config(self, config: MethodConfig) -> MethodConfig:
        """The dense method's own config from the mixed one."""
        names = {f.name for f in fields(self.dense.Config)}
        values = {f.name: getattr(config, f.name) for f in fields(config) if f.name in names}
        return self.dense.Config(**{**values, "method": self.dense.name})

    def sam3_config(self, config: MethodConfig):
        """SAM 3's config from the mixed one (its instances only: no semantic head)."""
        keys = ("threshold", "mask_threshold", "dedup_iou", "batch_size")
        return Sam3.configure(None, semantic=False, **{k: getattr(config, k) for k in keys})

    def probabilities(self, image, vocab, models, config, regions=None):
        """The dense method's probabilities (E, H, W) of the whole vocabulary."""
        probs = self.dense_method.probabilities(
            image, vocab, models, self.dense_config(config), regions
        )
        with self._lock:  # finish() is not given the vocabulary: it reads it here
            key = image_key(image)
            self._vocabs[key] = vocab
            self._vocabs.move_to_end(key)
            while len(self._vocabs) > 8:
                self._vocabs.popitem(last=False)
        return probs

    def predict(self, probs, config, background):
        return self.dense_method.predict(probs, self.dense_config(config), background)

    def instances(self, image, vocab, models, config):
        """SAM 3's instances of every class of ``vocab`` (stuff included)."""
        return self.sam3.instances(image, vocab, models, self.sam3_config(config))

    def object_classes(self, vocab, config) -> np.ndarray:
        """int64 indices of the object classes of ``vocab`` (the others are stuff)."""
        return np.array(
            [i for i, c in enumerate(vocab.classes) if not is_stuff(c, config.stuff)], np.int64
        )

    def finish(self, image, probs, labels, models, config, regions=None) -> Finished:
        """Steps 2-4 of the rule on the dense method's finished map."""
        with self._lock:
            vocab = self._vocabs.get(image_key(image))
        if vocab is None:
            raise RuntimeError("finish() needs probabilities() on the same image first")
        done = self.dense_method.finish(
            image, probs, labels, models, self.dense_config(config), regions
        )
        k = len(vocab.classes)
        objects = self.object_classes(vocab, config)
        out = np.where(np.isin(done.labels, objects), k, done.labels).astype(np.int64)
        found = self._object_instances(image, vocab, objects, models, config)
        classes = objects[found.class_index]
        confidence = np.zeros(out.shape, np.float32)
        for i in np.argsort(found.score, kind="stable"):  # the highest score painted last
            out[found.mask[i]] = classes[i]
            confidence[found.mask[i]] = found.score[i]
        return Finished(out, found.mask, classes, found.score, confidence)

    def _object_instances(self, image, vocab, objects, models, config) -> Sam3Instances:
        k = len(vocab.classes)
        if len(objects) == 0:
            h, w = image.shape[:2]
            return Sam3Instances(np.zeros(0, np.int64), np.zeros(0, np.float32),
                                 np.zeros((0, 4), np.float32), np.zeros((0, h, w), bool),
                                 np.zeros(0, np.int64))  # fmt: skip
        position = {int(c): j for j, c in enumerate(objects)}
        names, owners = [], []
        for name, owner in zip(vocab.names, vocab.owners, strict=True):
            owner = int(owner)
            if owner >= k:  # a background name
                names.append(name)
                owners.append(len(objects) + owner - k)
            elif owner in position:
                names.append(name)
                owners.append(position[owner])
        queries = (names, np.asarray(owners, np.int64), len(objects))
        return self.sam3._instances(image, queries, models, self.sam3_config(config))


class NaclipSam3(Mixed):
    """NACLIP for stuff, SAM 3 for objects."""

    name = "naclip+sam3"
    dense = Naclip


class ProxyClipSam3(Mixed):
    """ProxyCLIP for stuff, SAM 3 for objects."""

    name = "proxyclip+sam3"
    dense = ProxyClip


class CorrClipSam3(Mixed):
    """CorrCLIP for stuff, SAM 3 for objects. CorrCLIP's regions must come with each call
    (``masks=``): SAM 3 has no automatic mask grid to make them."""

    name = "corrclip+sam3"
    dense = CorrClip

    def probabilities(self, image, vocab, models, config, regions=None):
        if regions is None:
            raise ValueError(
                "method 'corrclip+sam3' needs CorrCLIP's regions with each call: pass masks= "
                "(bool (N, H, W) or an int id map, 0 = unsegmented); SAM 3 has no automatic "
                "mask grid to make them"
            )
        return super().probabilities(image, vocab, models, config, regions)
