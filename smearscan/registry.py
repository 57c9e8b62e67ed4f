"""Named segmentation models.

``--model NAME`` is looked up here; ``--model PATH.pt`` loads a trained
checkpoint (:mod:`smearscan.checkpoint`, its sha256 verified first). An
unknown name raises :class:`~smearscan.errors.ModelError` listing the known
ones; there is never a silent fallback to another model. Each call returns a fresh instance,
because some segmenters keep per-slide calibration state and slides may run
concurrently in threads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def is_checkpoint_path(name: str) -> bool:
    """Whether ``--model`` names a checkpoint file rather than a registered model."""
    return name.endswith(".pt") or Path(name).is_file()


def model_sha256(name: str) -> str:
    """sha256 of a checkpoint's weights file, or a note for models without weights.

    Raises:
        ModelError: The checkpoint's sha256 sidecar is missing or does not match.
    """
    if is_checkpoint_path(name):
        from smearscan.checkpoint import verify_checkpoint

        return verify_checkpoint(Path(name))
    return f"n/a ({name} has no weights)"


def load_model(name: str) -> torch.nn.Module:
    """A new instance of the model called ``name``, or loaded from the checkpoint ``name``.

    Raises:
        ModelError: No model of that name, or a checkpoint that is missing, corrupt or
            does not match its sha256.
    """
    if is_checkpoint_path(name):
        from smearscan.checkpoint import load_checkpoint

        return load_checkpoint(Path(name)).model
    try:
        factory, _ = MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}"
        ) from None
    return factory()
