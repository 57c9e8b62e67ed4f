"""Write synthetic fields with their truth sidecars, and read them back.

For an image ``DIR/NAME.EXT`` the truth lies beside it:

- ``DIR/NAME_truth.npz``: compressed arrays ``classes`` (uint8), ``cells``,
  ``nuclei``, ``rbcs``, ``platelets`` (int32), all ``(H, W)``;
- ``DIR/NAME_truth.json``: every other fact (:meth:`SynthField.metadata`):
  size, pixel size, seed, stain style, counts, and one record per WBC.

Neither sidecar name ends in an image extension, so folder scans that look
for images do not pick them up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from smearscan.errors import ConfigError, InputError
from smearscan.synth.field import generate_field
from smearscan.synth.stain import StainStyle
from smearscan.synth.truth import SynthField, WbcTruth

logger = logging.getLogger(__name__)

#: Image formats :func:`write_field` writes, by suffix.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_JPEG_QUALITY = 95
_ARRAYS: tuple[str, ...] = ("classes", "cells", "nuclei", "rbcs", "platelets")


def truth_paths(image_path: str | Path) -> tuple[Path, Path]:
    """Sidecar paths ``(<stem>_truth.npz, <stem>_truth.json)`` of an image."""
    image_path = Path(image_path)
    stem = image_path.stem
    return image_path.with_name(f"{stem}_truth.npz"), image_path.with_name(f"{stem}_truth.json")


def write_field(field: SynthField, image_path: str | Path) -> list[Path]:
    """Write a field's image and its truth sidecars.

    The format follows the suffix: ``.png`` (lossless, pixel size in the pHYs
    chunk), ``.jpg``/``.jpeg`` (quality 95, no chroma subsampling) or
    ``.tif``/``.tiff`` (lossless, resolution tags in centimetres).

    Args:
        field: The field to write.
        image_path: Image file to create (parent folders are created).

    Returns:
        ``[image, truth npz, truth json]`` paths.

    Raises:
        ConfigError: When the suffix is not one of :data:`IMAGE_SUFFIXES`.
    """
    image_path = Path(image_path)
    suffix = image_path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ConfigError(
            f"cannot write a synthetic field as {image_path.name!r}: use one of {IMAGE_SUFFIXES}"
        )
    image_path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".tif", ".tiff"):
        px_per_cm = 1e4 / field.pixel_size_um
        tifffile.imwrite(
            image_path,
            field.image,
            photometric="rgb",
            compression="zlib",
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
        )
    elif suffix == ".png":
        dpi = 25400.0 / field.pixel_size_um
        Image.fromarray(field.image).save(image_path, dpi=(dpi, dpi), compress_level=6)
    else:
        Image.fromarray(field.image).save(image_path, quality=_JPEG_QUALITY, subsampling=0)
    npz_path, json_path = truth_paths(image_path)
    with npz_path.open("wb") as fh:
        np.savez_compressed(fh, **{name: getattr(field, name) for name in _ARRAYS})
    meta = field.metadata()
    meta["image"] = image_path.name
    json_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    logger.info("wrote synthetic field %s (%d WBC) with truth sidecars", image_path, field.n_wbc)
    return [image_path, npz_path, json_path]


def load_truth(image_path: str | Path) -> SynthField:
    """Read an image written by :func:`write_field` together with its truth.

    Args:
        image_path: The image file (its sidecars must lie beside it).

    Returns:
        The field; ``image`` is the decoded file (for JPEG, not bit-identical
        to the generated image).

    Raises:
        InputError: When the image or a sidecar is missing or unreadable.
    """
    image_path = Path(image_path)
    npz_path, json_path = truth_paths(image_path)
    for path in (image_path, npz_path, json_path):
        if not path.is_file():
            raise InputError(path, "not found: write the field with smearscan.synth.write_field")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        with np.load(npz_path) as data:
            arrays = {name: np.array(data[name]) for name in _ARRAYS}
        with Image.open(image_path) as img:
            image = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            image_path, f"cannot read the synthetic field or its truth: {exc}"
        ) from exc
    return SynthField(
        image=image,
        pixel_size_um=float(meta["pixel_size_um"]),
        wbcs=[WbcTruth.from_dict(w) for w in meta["wbcs"]],
        n_rbc=int(meta["n_rbc"]),
        n_rbc_touching_edge=int(meta["n_rbc_touching_edge"]),
        n_platelets=int(meta["n_platelets"]),
        seed=int(meta["seed"]),
        stain=StainStyle.from_dict(meta["stain"]),
        border_positions_px=tuple(int(v) for v in meta["border_positions_px"]),
        touching_pairs=[(int(a), int(b)) for a, b in meta["touching_pairs"]],
        **arrays,
    )


def write_sample_set(
    out_dir: str | Path,
    n: int = 3,
    seed: int = 0,
    width: int = 2592,
    height: int = 1944,
    *,
    pixel_size_um: float = 0.1,
    image_format: str = "jpg",
    blasts: int = 0,
) -> list[Path]:
    """Write ``n`` full synthetic fields ``synth_NNN.<fmt>`` with truth sidecars.

    Field ``i`` uses seed ``seed + i`` (file ``synth_{seed + i:03d}``) and its own
    random stain style drawn from that seed, so the fields differ in colour.

    Args:
        out_dir: Folder to write into (created if needed).
        n: Number of fields (>= 1).
        seed: Seed of the first field.
        width: Field width, pixels.
        height: Field height, pixels.
        pixel_size_um: Pixel size, micrometres per pixel.
        image_format: ``jpg`` (default: small files, like real camera fields),
            ``png`` or ``tif``.
        blasts: Blast-like cells planted per field (see
            :func:`~smearscan.synth.field.generate_field`); default 0, a normal smear.

    Returns:
        The image paths written, in seed order.

    Raises:
        ConfigError: On invalid parameters.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    suffix = "." + image_format.lower().lstrip(".")
    if suffix not in IMAGE_SUFFIXES:
        raise ConfigError(f"image_format must be one of jpg, png, tif; got {image_format!r}")
    out_dir = Path(out_dir)
    images = []
    for i in range(n):
        field = generate_field(seed + i, width, height, pixel_size_um, blasts=blasts)
        images.append(write_field(field, out_dir / f"synth_{seed + i:03d}{suffix}")[0])
    return images
