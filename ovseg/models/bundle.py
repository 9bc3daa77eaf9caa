"""The models of one Segmenter, each built from its spec on first use (or at once, for the
ones its method needs), so that a method reads ``models.clip``, ``models.dino``,
``models.sam``, ``models.proposer`` or ``models.grid`` and nothing more."""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import fields, replace

import torch

from ovseg.constants import SAM2_TINY, TINY
from ovseg.models.build import (
    build_clip,
    build_dino,
    build_sam,
    check_sam_spec,
    resolve_device,
    sam_family,
)
from ovseg.models.sam2_weights import is_sam2_spec
from ovseg.models.sam3_weights import is_sam3_spec
from ovseg.proposals.grid import GridOptions
from ovseg.proposals.grid import fused_attention as use_fused_attention
from ovseg.proposals.sam2_grid import Sam2GridOptions

__all__ = ["GRID_OPTIONS", "Models", "split_options"]

GRID_OPTIONS = tuple(f.name for f in fields(Sam2GridOptions))
"""Every automatic-grid option name (SAM 1's and SAM 2's)."""
_NO_FILTERS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def split_options(method, options: dict) -> tuple[dict, dict]:
    """``options`` -> ``(options of the method class, grid options)``; unknown names raise,
    naming both kinds of option the method takes."""
    known = method.options_names()
    unknown = sorted(set(options) - set(known) - set(GRID_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method.name!r}; its options: "
            f"{', '.join(known)}; grid options: {', '.join(GRID_OPTIONS)}"
        )
    return (
        {k: v for k, v in options.items() if k in known},
        {k: v for k, v in options.items() if k in GRID_OPTIONS},
    )


class Models:
    """Lazily built models of a Segmenter.

    Args:
        sam, clip, dino, vfm, bank, aux_clip: specs as :class:`~ovseg.pipeline.Segmenter`
            takes them (None: none).
        device: where they run.
        random_weights: build registered architectures with random weights (warns).
        grid: the automatic grid's options (default: SAM 1's or SAM 2's generator defaults;
            the tiny random SAMs come with the quality filters off).
        fused_attention: SAM 1's encoder attention through PyTorch's fused SDPA.
        eager: the kinds (``"clip"``, ``"dino"``) to build now, so that a missing checkpoint
            fails at construction.
    """

    def __init__(
        self,
        *,
        sam,
        clip,
        dino=None,
        vfm=None,
        bank=None,
        aux_clip=None,
        device=None,
        random_weights: bool = False,
        grid: GridOptions | None = None,
        fused_attention: bool = True,
        eager: frozenset[str] = frozenset(),
    ):
        if grid is not None and not isinstance(grid, GridOptions):
            raise TypeError(f"grid must be a GridOptions, got {type(grid).__name__}")
        check_sam_spec(sam)  # a bad name or path fails now, even though SAM loads on first use
        self.sam_family = sam_family(sam)  # "sam1", "sam2", "sam3" or None
        self.sam3 = is_sam3_spec(sam)
        sam2 = not self.sam3 and is_sam2_spec(sam)
        if isinstance(grid, Sam2GridOptions) and not sam2:
            raise ValueError("Sam2GridOptions need a SAM 2 model; use GridOptions with SAM 1")
        self.lock = threading.RLock()
        self.device = resolve_device(device)
        self.random_weights, self.fused_attention = random_weights, fused_attention
        if bank is not None and not isinstance(bank, (str, os.PathLike)):
            raise TypeError(f"bank must be the path of a bank folder, got {type(bank).__name__}")
        self.specs = {"sam": sam, "clip": clip, "dino": dino, "vfm": vfm, "bank": bank,
                      "aux_clip": aux_clip}  # fmt: skip
        self.tiny_grid = grid is None and isinstance(sam, str) and sam in (TINY, SAM2_TINY)
        default = Sam2GridOptions() if sam2 else GridOptions()
        self.grid = replace(default, **_NO_FILTERS) if self.tiny_grid else (grid or default)
        self._built: dict[str, object] = {}
        for kind in sorted(eager):
            getattr(self, kind)

    def loaded(self, kind: str):
        """The model of ``kind`` if it is built already, else None (nothing is built)."""
        return self._built.get(kind)

    @property
    def has_sam(self) -> bool:
        return self.specs["sam"] is not None

    def _get(self, kind: str, build):
        with self.lock:
            if kind not in self._built:
                self._built[kind] = build()
            return self._built[kind]

    def _build(self, kind: str, builder):
        spec = self.specs[kind]
        if spec is None:
            if kind in ("dino", "aux_clip"):  # optional models
                return None
            raise ValueError(f"no {kind} model: give Segmenter({kind}=...)")
        return self._get(
            kind, lambda: builder(spec, self.device, random_weights=self.random_weights)
        )

    @property
    def clip(self):
        """The CLIP backend (:class:`~ovseg.scoring.backends.ClipBackend`)."""
        return self._build("clip", build_clip)

    @property
    def dino(self):
        """The DINO ViT, or None when no DINO spec was given."""
        return self._build("dino", build_dino)

    @property
    def vfm(self):
        """The vision foundation model (:func:`ovseg.models.vfm.build_vfm`)."""
        from ovseg.models.vfm import build_vfm

        return self._build("vfm", build_vfm)

    @property
    def aux_clip(self):
        """The auxiliary CLIP of a memory bank's second store (DMCE), or None."""
        return self._build("aux_clip", build_clip)

    @property
    def bank(self):
        """The memory bank (:class:`~ovseg.methods.bank.MemoryBank`) opened for these models
        (a bank built with another CLIP or VFM is refused), or None without a ``bank=``."""
        if self.specs["bank"] is None:
            return None

        def open_bank():
            from ovseg.methods.bank import open_for_run

            return open_for_run(self.specs["bank"], self.clip, self.vfm, self.aux_clip)

        return self._get("bank", open_bank)

    def eomt(self, spec):
        """The EoMT of ``spec`` (:func:`ovseg.models.eomt_weights.build_eomt`: ``"eomt"``, a
        hub id, a folder, ``"eomt-tiny-random"`` or a built model), built once per spec."""
        from ovseg.models.eomt_weights import build_eomt

        key = ("eomt", spec if isinstance(spec, str) else id(spec))
        return self._get(
            key, lambda: build_eomt(spec, self.device, random_weights=self.random_weights)
        )

    @property
    def sam(self):
        """The SAM model (``segment_anything`` ``Sam``, ``transformers`` ``Sam2Model``, or a
        :class:`~ovseg.proposals.sam3.Sam3Bundle` for SAM 3)."""
        return self._build("sam", build_sam)

    @property
    def proposer(self):
        """SAM's prompt proposer (``Proposer`` for SAM 1, ``Sam2Proposer`` for SAM 2,
        ``Sam3TrackerProposer`` for SAM 3), with an embedding cache; built on first use."""
        return self._get("proposer", self._make_proposer)

    def _make_proposer(self):
        from ovseg.proposals.sam import Proposer
        from ovseg.proposals.sam2 import Sam2Proposer, is_sam2_model

        if self.tiny_grid:
            warnings.warn(
                "ovseg: the tiny random SAM comes with the grid's quality filters off "
                "(pred_iou_thresh=0, stability_score_thresh=0): its scores are meaningless",
                UserWarning,
                stacklevel=4,
            )
        model = self.sam
        if self.sam3:
            from ovseg.proposals.sam3_tracker import Sam3TrackerProposer

            return Sam3TrackerProposer(model)
        if is_sam2_model(model):
            return Sam2Proposer(model)
        if self.fused_attention:
            use_fused_attention(model)
        return Proposer(model)

    def video_sam(self):
        """SAM 2's video model (``Sam2VideoModel``) of the SAM spec. A SAM 2 image model (what
        a name builds) is replaced by the video model of the same specification, which then
        serves the proposer too (its image path is the same): one set of weights."""
        from ovseg.models.sam2_weights import build_sam2
        from ovseg.proposals.sam2 import Sam2Proposer

        with self.lock:
            model = self.proposer.model
            if type(model).__name__ == "Sam2VideoModel":
                return model
            spec = self.specs["sam"]
            if not isinstance(spec, str):
                raise TypeError(
                    "video with SAM 2 needs its video model: pass a transformers Sam2VideoModel "
                    "or a SAM 2 name as sam="
                )
            model = build_sam2(spec, self.device, video=True, random_weights=self.random_weights)
            self._built["sam"], self._built["proposer"] = model, Sam2Proposer(model)
            return model

    def grid_options(self, **overrides) -> GridOptions:
        """The automatic grid's options with ``overrides`` (names in :data:`GRID_OPTIONS`).

        Raises:
            ValueError: an unknown name, or a SAM 2 option with SAM 1.
        """
        unknown = sorted(set(overrides) - set(GRID_OPTIONS))
        if unknown:
            raise ValueError(f"unknown grid option(s) {unknown}; known: {', '.join(GRID_OPTIONS)}")
        sam1 = {f.name for f in fields(GridOptions)}
        sam2_only = sorted(set(overrides) - sam1)
        if sam2_only and not isinstance(self.grid, Sam2GridOptions):
            raise ValueError(
                f"grid option(s) {sam2_only} apply to SAM 2's grid (Sam2GridOptions) only"
            )
        return replace(self.grid, **overrides)

    @torch.inference_mode()
    def automatic_masks(self, image, grid: GridOptions):
        """SAM's automatic masks of ``image`` (RGB uint8) with ``grid``."""
        from ovseg.proposals.grid import automatic_masks

        if self.sam3:
            raise ValueError(
                "SAM 3 has no automatic mask grid in ovseg: use method='sam3' for every instance "
                "of the classes, or a SAM 1 / SAM 2 model for refine='masks'"
            )
        proposer = self.proposer
        proposer.set_image(image)
        return automatic_masks(proposer, grid)
