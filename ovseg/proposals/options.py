"""The automatic grid's options: SAM 1's (``SamAutomaticMaskGenerator``'s names and defaults)
and SAM 2's (``SAM2AutomaticMaskGenerator``'s)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GridOptions", "Sam2GridOptions"]


@dataclass(frozen=True)
class GridOptions:
    """Options of the automatic grid (names and defaults as in ``SamAutomaticMaskGenerator``)."""

    points_per_side: int = 32
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    adaptive: bool = False
    max_masks: int | None = None

    def __post_init__(self):
        if not isinstance(self.points_per_side, int) or self.points_per_side < 1:
            raise ValueError(f"points_per_side must be a positive int, got {self.points_per_side}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class Sam2GridOptions(GridOptions):
    """Options of SAM 2's automatic grid: names and defaults of ``SAM2AutomaticMaskGenerator``
    (``points_per_batch`` 64, ``pred_iou_thresh`` 0.8), plus ``multimask_output`` (three
    candidates per point, else one) and ``use_m2m`` (one mask-to-mask refinement step).
    ``adaptive`` is a SAM 1 option and is refused here."""

    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    multimask_output: bool = True
    use_m2m: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.adaptive:
            raise ValueError("adaptive applies to SAM 1's grid only, not to SAM 2")
        for name in ("multimask_output", "use_m2m"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
