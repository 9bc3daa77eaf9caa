"""The side-by-side benchmark: the plain SAM + CLIP pipeline against ovseg, in one process."""
