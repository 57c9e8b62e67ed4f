"""The checkpoint format of smearscan's trained models: one file plus its sha256.

DESIGN.md: "A model ships with its spec and sha256; the pipeline refuses a
mismatch." A checkpoint is one file ``NAME.pt`` written by :func:`torch.save`
of a plain dict (only dicts, lists, tuples, strings, numbers, booleans, None
and tensors, so it loads with ``torch.load(..., weights_only=True)`` and
loading never runs pickled code)::

    {
        "format": "smearscan-checkpoint",
        "version": 1,
        "arch": {"arch", "width", "depth", "n_classes", "input_pixel_size_um",
                 "deep_supervision"},          # build_model arguments
        "spec": {...},                         # the ModelSpec, tuples as lists
        "postprocess": {...},                  # tuned thresholds
        "state_dict": {...},                   # model.state_dict()
        "training": {...} or None,             # epoch, optimizer state, history...
        "metadata": {...},                     # data used, command line, time...
    }

Beside it, ``NAME.pt.sha256`` holds the digest of the file's bytes in the
``sha256sum`` format (``<hex>  NAME.pt``), so ``sha256sum -c`` checks it too.
Both files are written atomically; :func:`load_checkpoint` verifies the digest
before unpickling anything.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smearscan.atomic import atomic_write
from smearscan.digests import (  # noqa: F401  (re-exported: the checkpoint API)
    SIDECAR_SUFFIX,
    _normalise_digest,
    _require_file,
    file_sha256,
    read_sidecar,
    sidecar_path,
    verify_checkpoint,
    write_sidecar,
)
from smearscan.errors import ModelError
from smearscan.models.base import ModelSpec
from smearscan.models.factory import build_model
from smearscan.models.network import SegmentationNet

#: Value of the ``"format"`` key of every checkpoint.
CHECKPOINT_FORMAT = "smearscan-checkpoint"
#: Format version written by :func:`save_checkpoint`.
CHECKPOINT_VERSION = 1
#: Format versions :func:`load_checkpoint` reads.
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})
#: Keys of the ``"arch"`` entry: the arguments of :func:`build_model`.
ARCH_KEYS: tuple[str, ...] = (
    "arch",
    "width",
    "depth",
    "n_classes",
    "input_pixel_size_um",
    "deep_supervision",
)

_SPEC_TUPLES = ("classes", "mean", "std")
_SCALARS = (str, int, float, bool, bytes, type(None), torch.Tensor, torch.dtype, torch.device)


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back by :func:`load_checkpoint`.

    Attributes:
        model: The rebuilt network, weights loaded, in eval mode, carrying the stored spec.
        spec: The spec stored with the weights (also ``model.spec``).
        postprocess: Tuned post-processing parameters (thresholds...).
        training: Training state (epoch, optimizer state...) or None.
        metadata: Free information recorded at save time.
        sha256: Hex digest of the checkpoint file.
        arch: The :func:`build_model` arguments the model was rebuilt from.
    """

    model: SegmentationNet
    spec: ModelSpec
    postprocess: dict[str, Any]
    training: dict[str, Any] | None
    metadata: dict[str, Any]
    sha256: str
    arch: dict[str, Any] = field(default_factory=dict)


# -- spec <-> plain dict ---------------------------------------------------------------------


def _jsonable(value: object) -> object:
    """``value`` with every tuple turned into a list, recursively."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """The fields of ``spec`` as a JSON-able dict (tuples as lists, ``extra`` included)."""
    return {f.name: _jsonable(getattr(spec, f.name)) for f in dataclasses.fields(spec)}


def spec_from_dict(d: Mapping[str, Any]) -> ModelSpec:
    """Rebuild a :class:`ModelSpec` from :func:`spec_to_dict` output, tuples restored.

    Lists inside ``extra`` stay lists.

    Raises:
        ModelError: Not a mapping, unknown or missing fields.
    """
    if not isinstance(d, Mapping):
        raise ModelError(f"model spec must be a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ModelError(f"model spec has unknown fields: {', '.join(map(str, unknown))}")
    kwargs = dict(d)
    for key in _SPEC_TUPLES:
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    kwargs["extra"] = dict(kwargs.get("extra") or {})
    try:
        return ModelSpec(**kwargs)
    except TypeError as exc:
        raise ModelError(f"invalid model spec: {exc}") from None


# -- save ------------------------------------------------------------------------------------


def _check_plain(value: object, where: str) -> None:
    """Raise ModelError unless ``value`` loads under ``torch.load(weights_only=True)``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ModelError(f"{where}: key {key!r} must be a str or an int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _SCALARS):
        raise ModelError(
            f"{where}: {type(value).__name__} cannot be stored in a checkpoint; use tensors, "
            "numbers, strings, lists and dicts (numpy arrays: torch.from_numpy or .tolist())"
        )


def _check_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` as a plain dict with exactly :data:`ARCH_KEYS`; ModelError otherwise."""
    if not isinstance(arch, Mapping):
        raise ModelError(f"checkpoint arch must be a dict, got {type(arch).__name__}")
    missing = [k for k in ARCH_KEYS if k not in arch]
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if missing or unknown:
        raise ModelError(
            f"checkpoint arch needs exactly the keys {', '.join(ARCH_KEYS)}"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
        )
    return {k: arch[k] for k in ARCH_KEYS}


def _build(arch: Mapping[str, Any], name: str | None) -> SegmentationNet:
    """``build_model`` called with the ``arch`` entry of a checkpoint."""
    return build_model(
        arch["arch"],
        width=arch["width"],
        depth=arch["depth"],
        n_classes=arch["n_classes"],
        input_pixel_size_um=arch["input_pixel_size_um"],
        deep_supervision=arch["deep_supervision"],
        name=name,
    )


def _check_model_matches_arch(model: torch.nn.Module, arch: Mapping[str, Any]) -> ModelSpec:
    """The spec of ``model``; ModelError unless ``arch`` rebuilds its exact parameter shapes."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise ModelError(f"{type(model).__name__} has no ModelSpec 'spec'; cannot checkpoint it")
    if spec.architecture != arch["arch"]:
        raise ModelError(
            f"model architecture {spec.architecture!r} differs from arch {arch['arch']!r}"
        )
    with torch.device("meta"):  # shapes only, no memory, no initialisation cost
        reference = _build(arch, spec.name)
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:5]
        raise ModelError(f"model weights do not match arch {dict(arch)}; first differences: {diff}")
    return spec


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    arch: Mapping[str, Any],
    postprocess: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write ``model`` to ``path`` (``NAME.pt``) and its digest to ``NAME.pt.sha256``.

    Args:
        path: Checkpoint file; its folder is created when missing.
        model: A network built by :func:`build_model` (its ``spec`` is stored as is).
        arch: The :func:`build_model` arguments, keys :data:`ARCH_KEYS`.
        postprocess: Tuned post-processing parameters.
        training: Resumable training state (tensors, numbers, strings, lists, dicts).
        metadata: Free information (data used, command line, creation time).

    Returns:
        The hex sha256 of the written file.

    Raises:
        ModelError: ``arch`` does not describe ``model``, or a value cannot be
            loaded back with ``weights_only=True``.
    """
    path = Path(path)
    arch = _check_arch(arch)
    spec = _check_model_matches_arch(model, arch)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "spec": spec_to_dict(spec),
        "postprocess": dict(postprocess or {}),
        "state_dict": model.state_dict(),
        "training": None if training is None else dict(training),
        "metadata": dict(metadata or {}),
    }
    for key in ("arch", "spec", "postprocess", "training", "metadata"):
        _check_plain(payload[key], key)
    return save_with_sidecar(path, payload)


def save_with_sidecar(path: Path, payload: Mapping[str, Any]) -> str:
    """``torch.save`` ``payload`` to ``path`` atomically, then its sha256 sidecar.

    Returns:
        The hex sha256 of the written file (the same bytes for the same payload,
        whatever the file name).
    """
    digests: list[str] = []

    def write(tmp: Path) -> None:
        # Through a buffer: saved to a path, torch names the archive's inner folder after
        # the (temporary, random) file name, and the same weights would differ in sha256.
        buffer = io.BytesIO()
        torch.save(dict(payload), buffer)
        tmp.write_bytes(buffer.getvalue())
        digests.append(file_sha256(tmp))  # the digest of exactly the bytes moved into place

    atomic_write(Path(path), write)
    # A crash between the two renames leaves a stale or missing sidecar: loading refuses.
    write_sidecar(Path(path), digests[0])
    return digests[0]


# -- load ------------------------------------------------------------------------------------


def _read_payload(path: Path, map_location: Any) -> dict[str, Any]:
    """The checkpoint dict of ``path``, format and version checked."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, disallowed globals...
        raise ModelError(
            f"{path}: cannot read model checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a smearscan checkpoint (no format {CHECKPOINT_FORMAT!r})")
    version = payload.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ModelError(
            f"{path}: unsupported checkpoint version {version!r}; this smearscan reads "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}"
        )
    missing = [k for k in ("arch", "spec", "state_dict") if k not in payload]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return payload


def _check_spec_matches(path: Path, spec: ModelSpec, built: ModelSpec) -> None:
    """ModelError unless the stored spec agrees with the rebuilt network's structure
    and its halo covers the network's receptive field."""
    for label, stored, actual in (
        ("architecture", spec.architecture, built.architecture),
        ("number of classes", spec.n_classes, built.n_classes),
        ("size_multiple", spec.size_multiple, built.size_multiple),
    ):
        if stored != actual:
            raise ModelError(
                f"{path}: stored spec {label} {stored!r} does not match the network "
                f"built from arch ({actual!r})"
            )
    if spec.halo_px < built.halo_px:
        raise ModelError(
            f"{path}: stored halo {spec.halo_px} px is smaller than the network's receptive "
            f"field needs ({built.halo_px} px): tiles would not match whole-image inference"
        )


def _rebuild(path: Path, payload: Mapping[str, Any]) -> tuple[SegmentationNet, ModelSpec]:
    """The network of ``payload`` with its weights and stored spec, in eval mode."""
    try:
        arch = _check_arch(payload["arch"])
        spec = spec_from_dict(payload["spec"])
        model = _build(arch, spec.name)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    _check_spec_matches(path, spec, model.spec)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: weights do not fit arch {arch}: {exc}") from None
    model.spec = spec
    model.eval()
    return model, spec


def _move(model: SegmentationNet, map_location: Any) -> SegmentationNet:
    """``model`` moved to ``map_location`` when it names one device (str or torch.device)."""
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    return model


def load_checkpoint(
    path: str | Path,
    *,
    verify: bool = True,
    map_location: Any = "cpu",
    expected_sha256: str | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The ``NAME.pt`` file.
        verify: Check the file against ``expected_sha256`` or its sidecar before reading it.
        map_location: Passed to :func:`torch.load`; when it is one device (str or
            ``torch.device``) the model is moved there too.
        expected_sha256: Digest to check against instead of the sidecar (e.g. from a registry).

    Returns:
        The rebuilt model (eval mode, stored spec) and the rest of the checkpoint.

    Raises:
        ModelError: Missing file or sidecar, sha256 mismatch, unreadable or foreign
            file, unknown version, spec or weights that do not fit the architecture.
    """
    path = Path(path)
    _require_file(path)
    digest = verify_checkpoint(path, expected_sha256) if verify else file_sha256(path)
    payload = _read_payload(path, map_location)
    model, spec = _rebuild(path, payload)
    _move(model, map_location)
    return LoadedCheckpoint(
        model=model,
        spec=spec,
        postprocess=dict(payload.get("postprocess") or {}),
        training=payload.get("training"),
        metadata=dict(payload.get("metadata") or {}),
        sha256=digest,
        arch=dict(payload["arch"]),
    )
