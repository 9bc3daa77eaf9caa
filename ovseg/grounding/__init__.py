"""Language grounding: referring phrases -> regions, heatmaps and grasp points."""

from ovseg.grounding.core import ground, heatmap
from ovseg.grounding.grasp import grasp_point, phrase_from_instruction
from ovseg.grounding.result import GroundingResult, Region

__all__ = [
    "GroundingResult",
    "Region",
    "grasp_point",
    "ground",
    "heatmap",
    "phrase_from_instruction",
]
