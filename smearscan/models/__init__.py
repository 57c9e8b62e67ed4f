"""Segmentation models: the common :class:`~smearscan.models.base.ModelSpec` and factories."""

from smearscan.models.base import SEMANTIC_CLASSES, ModelSpec, Segmenter

__all__ = ["SEMANTIC_CLASSES", "ModelSpec", "Segmenter"]
