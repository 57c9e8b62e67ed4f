"""Named segmentation models and cell classifiers.

``--model NAME`` is looked up here: the trained weights shipped in
``smearscan/weights/`` (each with its sha256 recorded below and a model card,
``smearscan/weights/MODEL_CARD.md``) and the classical colour segmenter.
``--model PATH.pt`` loads a trained checkpoint of one's own
(:mod:`smearscan.checkpoint`, its sha256 sidecar verified first). An
unknown name raises :class:`~smearscan.errors.ModelError` listing the known
ones; there is never a silent fallback to another model. Each call returns a fresh instance,
because some segmenters keep per-slide calibration state and slides may run
concurrently in threads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from smearscan.config import DEFAULT_CLASSIFIER, DEFAULT_MODEL
from smearscan.errors import ModelError

if TYPE_CHECKING:  # torch is imported only when a model is loaded
    import torch

#: Folder of the shipped weights.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


#: Shipped weights: name -> (file in WEIGHTS_DIR, its sha256, one-line description).
SHIPPED: dict[str, tuple[str, str, str]] = {
    "unet-v1": (
        "unet-v1.pt",
        "860b83dd1b44f6fc951b66022db645951ec43bc6946e3fa1dcca1d0fae2c2ca9",
        "U-Net width 8, depth 4, 0.2 µm/px; trained on wbc-seg + TXL-PBC train (MODEL_CARD.md)",
    ),
}


def _classical() -> torch.nn.Module:
    from smearscan.segmenters import ClassicalSegmenter

    return ClassicalSegmenter()


#: Model name -> (factory, one-line description).
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "classical": (_classical, "stain-based colour segmenter, no weights (0.25 µm/px)"),
}


def available_models() -> dict[str, str]:
    """Known model names and their descriptions (the default marked)."""
    names = {name: desc for name, (_, _, desc) in SHIPPED.items()}
    names.update({name: desc for name, (_, desc) in MODELS.items()})
    return {
        name: f"{desc} [default]" if name == DEFAULT_MODEL else desc for name, desc in names.items()
    }


def shipped_path(name: str) -> tuple[Path, str]:
    """The weights file of a shipped model and its recorded sha256.

    Raises:
        ModelError: Not a shipped model name.
    """
    try:
        file, digest, _ = SHIPPED[name]
    except KeyError:
        raise ModelError(f"{name!r} is not a shipped model") from None
    return WEIGHTS_DIR / file, digest


def is_checkpoint_path(name: str) -> bool:
    """Whether ``--model`` names a checkpoint file rather than a registered model."""
    return name.endswith(".pt") or Path(name).is_file()


def model_sha256(name: str) -> str:
    """sha256 of a checkpoint's weights file, or a note for models without weights.

    Raises:
        ModelError: The checkpoint's sha256 sidecar is missing or does not match.
    """
    from smearscan.digests import verify_checkpoint

    if name in SHIPPED:
        return verify_checkpoint(*shipped_path(name))
    if is_checkpoint_path(name):
        return verify_checkpoint(Path(name))
    return f"n/a ({name} has no weights)"


def load_model(name: str) -> torch.nn.Module:
    """A new instance of the model called ``name``, or loaded from the checkpoint ``name``.

    Raises:
        ModelError: No model of that name, or a checkpoint that is missing, corrupt or
            does not match its sha256.
    """
    from smearscan.checkpoint import load_checkpoint

    if name in SHIPPED:
        path, digest = shipped_path(name)
        return load_checkpoint(path, expected_sha256=digest).model
    if is_checkpoint_path(name):
        return load_checkpoint(Path(name)).model
    try:
        factory, _ = MODELS[name]
    except KeyError:
        known = ", ".join(sorted([*SHIPPED, *MODELS]))
        raise ModelError(
            f"unknown model {name!r}; available: {known}, or a trained checkpoint PATH.pt"
        ) from None
    return factory()


#: Shipped classifiers: name -> (file in WEIGHTS_DIR, sha256, one-line description).
SHIPPED_CLASSIFIERS: dict[str, tuple[str, str, str]] = {
    "cellnet-v1": (
        "cellnet-v1.pt",
        "6c0fc3234825c098c4b88887603efe46caa3e9e2029bc4af882bafbcbedd4253",
        "CellNet width 16, 96 px crops at 0.3 µm/px + morphometry; trained on PBC + "
        "wbc-seg "
        "(CLASSIFIER_CARD.md)",
    ),
}


def available_classifiers() -> dict[str, str]:
    """Names ``--classifier`` accepts, with descriptions (the default marked)."""
    names = {name: desc for name, (_, _, desc) in SHIPPED_CLASSIFIERS.items()}
    names["rules"] = "morphometric rules, no network"
    return {n: f"{d} [default]" if n == DEFAULT_CLASSIFIER else d for n, d in names.items()}


def classifier_path(name: str) -> tuple[Path, str | None]:
    """File and expected sha256 (None: from the sidecar) of a classifier name or path.

    Raises:
        ModelError: Neither a shipped classifier nor a ``.pt`` path.
    """
    if name in SHIPPED_CLASSIFIERS:
        file, digest, _ = SHIPPED_CLASSIFIERS[name]
        return WEIGHTS_DIR / file, digest
    if name.endswith(".pt") or Path(name).is_file():
        return Path(name), None
    known = ", ".join(["rules", *SHIPPED_CLASSIFIERS])
    raise ModelError(f"unknown classifier {name!r}; known: {known}, or a PATH.pt")
