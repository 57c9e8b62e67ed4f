"""Segmentation models: the common :class:`~smearscan.models.base.ModelSpec` and factories."""

from smearscan.models.base import SEMANTIC_CLASSES, ModelSpec, Segmenter
from smearscan.models.factory import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "SEMANTIC_CLASSES", "ModelSpec", "Segmenter", "build_model"]
