"""Segmenters that need no trained weights (the classical stain-based one)."""

from smearscan.segmenters.classical import CLASSICAL_PIXEL_SIZE_UM, ClassicalSegmenter

__all__ = ["CLASSICAL_PIXEL_SIZE_UM", "ClassicalSegmenter"]
