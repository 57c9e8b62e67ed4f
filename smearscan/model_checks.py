"""Checks a run makes before its first slide: do the model, classifier and device exist?

An unknown ``--model`` or ``--classifier``, a checkpoint without its sha256
sidecar, or ``--device cuda`` on a machine without a usable GPU would fail
every slide of the batch, one by one, after the ledger, the Zarr store, the
log and the lock were written. :func:`check_models` finds these from the
names alone (and the checkpoints' digests), so that the CLI can call them
usage errors; torch is imported only to ask for CUDA when ``cuda`` is asked
for by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from smearscan.config import ProcessConfig
from smearscan.digests import verify_checkpoint
from smearscan.errors import ModelError
from smearscan.registry import MODELS, SHIPPED, classifier_path, is_checkpoint_path, shipped_path

log = logging.getLogger(__name__)


def check_model(name: str) -> None:
    """Refuse a ``--model`` that names no model: a registered name or a checkpoint file.

    Raises:
        ModelError: Unknown name; a checkpoint missing, without its sha256 sidecar or
            not matching it; shipped weights that do not match their recorded sha256.
    """
    if name in SHIPPED:
        verify_checkpoint(*shipped_path(name))
    elif name in MODELS:
        return
    elif is_checkpoint_path(name):
        try:
            verify_checkpoint(Path(name))
        except ModelError as exc:
            raise ModelError(f"--model: {exc}") from None
    else:
        known = ", ".join(sorted([*SHIPPED, *MODELS]))
        raise ModelError(
            f"--model {name!r}: unknown model; available: {known}, or a trained checkpoint "
            "PATH.pt (see `smearscan models`)"
        )


def check_classifier(name: str) -> None:
    """Refuse a ``--classifier`` that names no classifier (``rules``, shipped, ``PATH.pt``).

    Raises:
        ModelError: Unknown name, or a file that is missing or does not match its sha256.
    """
    if name == "rules":
        return
    try:
        path, digest = classifier_path(name)
        verify_checkpoint(path, digest)
    except ModelError as exc:
        raise ModelError(f"--classifier: {exc} (see `smearscan models`)") from None


def check_device(device: str) -> None:
    """Refuse ``cuda`` on a machine where torch sees no usable CUDA device.

    Raises:
        ConfigError: ``cuda`` asked for and not available.
    """
    if device != "cuda":
        return
    from smearscan.inference import choose_device

    choose_device(device)


def check_models(config: ProcessConfig) -> None:
    """The segmentation model, the classifier and the device of ``config`` all exist.

    Raises:
        ModelError: Unknown or unverifiable model or classifier.
        ConfigError: ``--device cuda`` without a usable GPU.
    """
    check_model(config.model)
    check_classifier(config.classify.classifier)
    check_device(config.inference.device)
    log.debug(
        "model %s, classifier %s, device %s: found",
        config.model,
        config.classify.classifier,
        config.inference.device,
    )
