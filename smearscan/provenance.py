"""What a run records about itself: versions, host, times, model and every parameter.

The report's ``Run`` sheet shows this record, so a result can always be traced
back to the software and settings that produced it.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from smearscan import __version__
from smearscan.config import ProcessConfig
from smearscan.errors import SmearscanError
from smearscan.registry import model_sha256
from smearscan.results import OutputPaths, SlideResult

#: Packages whose versions the Run sheet records (read from their metadata, not imported).
_PACKAGES = {
    "torch": "torch",
    "numpy": "numpy",
    "zarr": "zarr",
    "dask": "dask",
    "ome-zarr": "ome-zarr",
    "opencv": "opencv-python-headless",
}


def _versions() -> dict[str, str]:
    versions = {"smearscan": __version__, "python": platform.python_version()}
    for label, dist in _PACKAGES.items():
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[label] = "?"
    return versions


def model_sha256_or_note(name: str) -> str:
    """sha256 of a segmentation model's weights, or a note saying why there is none."""
    try:
        return model_sha256(name)
    except SmearscanError as exc:  # the slides already say why the model failed
        return f"unverified: {exc}"


def classifier_sha256(name: str) -> str:
    """sha256 of a classifier file, or a note (rules; unverified and why)."""
    from smearscan.digests import verify_checkpoint
    from smearscan.registry import classifier_path

    if name == "rules":
        return "n/a (rules have no weights)"
    try:
        return verify_checkpoint(*classifier_path(name))
    except SmearscanError as exc:
        return f"unverified: {exc}"


def _device(config: ProcessConfig, processed: int) -> str:
    if processed == 0:
        return "not used (no slide processed)"
    from smearscan.inference import choose_device

    return str(choose_device(config.inference.device))


def run_info(
    config: ProcessConfig,
    inputs: Sequence[Path],
    outputs: OutputPaths,
    started: datetime,
    finished: datetime,
    results: Sequence[SlideResult],
    processed: int | None = None,
) -> dict[str, Any]:
    """Flat key/value record of a run for the report's Run sheet.

    ``processed`` is the number of slides this run processed (None: all of
    ``results``). With none processed (every slide done before, per the
    ledger) the compute device is not looked up, so torch is never imported.
    """
    info: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 2),
        "host": socket.gethostname(),
        "inputs": "; ".join(str(p) for p in inputs),
        "report": str(outputs.report),
        "masks": str(outputs.zarr),
        "slides": len(results),
        "slides_ok": sum(r.status == "ok" for r in results),
        "slides_failed": sum(r.status == "failed" for r in results),
        "model": config.model,
        "model_sha256": model_sha256_or_note(config.model),
        "classifier": config.classify.classifier,
        "classifier_sha256": classifier_sha256(config.classify.classifier),
        "slides_processed": len(results) if processed is None else processed,
        "device": _device(config, len(results) if processed is None else processed),
    }
    info.update({f"version.{k}": v for k, v in _versions().items()})

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else k, v)
        else:
            info[f"param.{prefix}"] = (
                value if not isinstance(value, (list, tuple)) else ", ".join(map(str, value))
            )

    flatten("", config.to_dict())
    return info
