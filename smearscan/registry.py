"""Named segmentation models.

``--model NAME`` is looked up here. An unknown name raises
:class:`~smearscan.errors.ModelError` listing the known ones; there is never
a silent fallback to another model. Each call returns a fresh instance,
because some segmenters keep per-slide calibration state and slides may run
concurrently in threads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from smearscan.errors import ModelError


def _classical() -> torch.nn.Module:
    from smearscan.segmenters import ClassicalSegmenter

    return ClassicalSegmenter()


#: Model name -> (factory, one-line description).
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "classical": (_classical, "stain-based colour segmenter, no weights (0.25 µm/px)"),
}


def available_models() -> dict[str, str]:
    """Known model names and their descriptions."""
    return {name: desc for name, (_, desc) in MODELS.items()}


def load_model(name: str) -> torch.nn.Module:
    """A new instance of the model called ``name``.

    Raises:
        ModelError: No model of that name.
    """
    try:
        factory, _ = MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}"
        ) from None
    return factory()
