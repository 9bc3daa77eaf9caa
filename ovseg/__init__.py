"""ovseg: open-vocabulary, promptable semantic segmentation with SAM proposals and CLIP scoring."""

__version__ = "0.1.0"
