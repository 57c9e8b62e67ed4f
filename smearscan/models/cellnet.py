"""``CellNet``: the small cell classifier (a CNN on the crop plus a feature head).

Input: a crop centred on one cell at the classifier's canonical scale,
float32 ``(N, 3, S, S)`` normalised RGB, and a float32 ``(N, F)`` vector of
morphometry values with their missing-value indicators
(:func:`smearscan.cell_crops.feature_matrix`). Output: float32 ``(N, C)``
logits over the classifier's classes.

The image branch is ``levels`` stages of two 3x3 conv + BatchNorm + ReLU
with 2x2 max-pooling between them (channels ``width · 2^k``), then global
average pooling; the feature branch is one linear layer + ReLU; both are
concatenated, then dropout and a linear layer give the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from smearscan.models.blocks import double_conv


class CellNet(nn.Module):
    """CNN + morphometry-feature classifier of single-cell crops.

    Args:
        n_classes: Output classes ``C``.
        n_features: Length ``F`` of the feature vector (0: image only).
        width: Channels of the first stage.
        levels: Conv stages (each but the last halves the resolution).
        dropout: Dropout before the last layer.
    """

    def __init__(
        self,
        n_classes: int,
        n_features: int = 0,
        width: int = 16,
        levels: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        stages: list[nn.Module] = []
        channels_in = 3
        for level in range(levels):
            channels = width * 2**level
            if level:
                stages.append(nn.MaxPool2d(2))
            stages.append(double_conv(channels_in, channels))
            channels_in = channels
        self.image_branch = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.n_features = n_features
        feature_width = 16 if n_features else 0
        self.feature_branch = (
            nn.Sequential(nn.Linear(n_features, feature_width), nn.ReLU(inplace=True))
            if n_features
            else None
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(channels_in + feature_width, n_classes)
        )

    def forward(self, image: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, C)`` of crops ``(N, 3, S, S)`` and features ``(N, F)``."""
        x = self.image_branch(image)
        if self.feature_branch is not None:
            if features is None or features.shape != (image.shape[0], self.n_features):
                got = None if features is None else tuple(features.shape)
                raise ValueError(f"expected features of shape (N, {self.n_features}), got {got}")
            x = torch.cat([x, self.feature_branch(features)], dim=1)
        return self.head(x)
