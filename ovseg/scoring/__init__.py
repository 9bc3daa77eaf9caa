"""Scoring: CLIP backends, the vocabulary (names, synonyms, templates) and region scorers."""

from ovseg.scoring.backends import ClipBackend, HFClipBackend, OpenClipBackend
from ovseg.scoring.regions import SCORERS, CropScorer, DenseScorer, EnsembleScorer, make_scorer
from ovseg.scoring.vocabulary import Vocabulary, parse_classes, template_sets, validate_classes

__all__ = [
    "SCORERS",
    "ClipBackend",
    "CropScorer",
    "DenseScorer",
    "EnsembleScorer",
    "HFClipBackend",
    "OpenClipBackend",
    "Vocabulary",
    "make_scorer",
    "parse_classes",
    "template_sets",
    "validate_classes",
]
