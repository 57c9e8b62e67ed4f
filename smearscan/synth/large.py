"""A large tiled BigTIFF "slide" made of synthetic smear blocks, in bounded memory.

A few square synthetic fields (the *blocks*, 2048x2048 px by default) are
generated once; the slide is a mosaic of blocks, each shown in one of the 8
rotations/flips of one of them (chosen from the seed), and is written tile by
tile from an iterator so the whole image never exists in memory. Cells cut by
block seams are an artefact of the mosaic; no truth is written for the slide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile

from smearscan.errors import ConfigError
from smearscan.synth.field import generate_field
from smearscan.synth.stain import StainStyle

logger = logging.getLogger(__name__)

#: Compression names accepted by :func:`write_large_tiff` -> (tifffile codec, codec args).
_COMPRESSIONS: dict[str, tuple[str | None, dict[str, int] | None]] = {
    "jpeg": ("jpeg", {"level": 90}),
    "zlib": ("zlib", None),
    "deflate": ("zlib", None),
    "lzw": ("lzw", None),
    "zstd": ("zstd", None),
    "none": (None, None),
}
_MAX_SIDE_PX = 2**20


class _Mosaic:
    """Infinite mosaic of dihedral variants of a few square RGB blocks.

    Args:
        blocks: uint8 arrays ``(B, B, 3)``, all the same size.
        seed: Seed choosing each block position's source and variant.
    """

    def __init__(self, blocks: list[np.ndarray], seed: int) -> None:
        self.size = blocks[0].shape[0]
        # np.rot90 and slicing with negative steps are views: no copies are made
        self.variants = [
            np.rot90(b, k)[:, ::-1] if flip else np.rot90(b, k)
            for b in blocks
            for k in range(4)
            for flip in (False, True)
        ]
        self.seed = seed

    def _variant(self, by: int, bx: int) -> np.ndarray:
        """The block variant (a view) shown at block row ``by``, column ``bx``."""
        rng = np.random.default_rng((self.seed, by, bx))
        return self.variants[int(rng.integers(len(self.variants)))]

    def region(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """uint8 ``(h, w, 3)``: the mosaic window starting at row ``y0``, column ``x0``."""
        out = np.empty((h, w, 3), np.uint8)
        b = self.size
        for by in range(y0 // b, (y0 + h - 1) // b + 1):
            ys0, ys1 = max(y0, by * b), min(y0 + h, (by + 1) * b)
            for bx in range(x0 // b, (x0 + w - 1) // b + 1):
                xs0, xs1 = max(x0, bx * b), min(x0 + w, (bx + 1) * b)
                src = self._variant(by, bx)
                out[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0] = src[
                    ys0 - by * b : ys1 - by * b, xs0 - bx * b : xs1 - bx * b
                ]
        return out


def _tiles(mosaic: _Mosaic, width: int, height: int, tile: int) -> Iterator[np.ndarray]:
    """Full-size ``(tile, tile, 3)`` tiles in row-major order (edge tiles overhang)."""
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            yield mosaic.region(y0, x0, tile, tile)


def _blocks(seed: int, n_blocks: int, block_px: int, pixel_size_um: float) -> list[np.ndarray]:
    """Generate the mosaic's source blocks (no vignetting, so seams stay invisible in light)."""
    borders = tuple(range(512, block_px, 512))
    n_wbc = len(borders) * 2 + 2
    blocks = []
    for i in range(n_blocks):
        style = StainStyle.random(np.random.default_rng((seed, 7919)))
        style = replace(style, vignetting=0.0)
        field = generate_field(
            seed * 1000 + i,
            block_px,
            block_px,
            pixel_size_um,
            n_wbc=n_wbc,
            n_touching_pairs=1,
            border_positions_px=borders,
            stain=style,
        )
        blocks.append(field.image)
    return blocks


def write_large_tiff(
    path: str | Path,
    width: int = 40000,
    height: int = 40000,
    *,
    pixel_size_um: float = 0.25,
    tile: int = 512,
    seed: int = 0,
    compression: str = "jpeg",
    n_blocks: int = 3,
    block_px: int = 2048,
) -> None:
    """Write a large synthetic RGB slide as a tiled BigTIFF.

    Memory stays bounded by the blocks (``n_blocks * block_px**2 * 3`` bytes plus
    the generator's work space), whatever the slide size. All blocks share one
    stain style (one slide, one stain).

    Args:
        path: Output ``.tif``/``.tiff`` file.
        width: Slide width, pixels.
        height: Slide height, pixels.
        pixel_size_um: Pixel size, micrometres per pixel; written as the X/Y
            resolution in pixels per centimetre (RESUNIT centimeter).
        tile: Tile side, pixels (a multiple of 16).
        seed: Seed of the blocks and of the mosaic layout.
        compression: ``jpeg`` (quality 90), ``zlib``/``deflate``, ``lzw``, ``zstd`` or ``none``.
        n_blocks: Number of distinct synthetic blocks.
        block_px: Side of a block, pixels.

    Raises:
        ConfigError: On invalid parameters.
    """
    _validate(width, height, tile, compression, n_blocks, block_px, seed)
    started = time.perf_counter()
    blocks = _blocks(seed, n_blocks, block_px, pixel_size_um)
    mosaic = _Mosaic(blocks, seed)
    codec, codec_args = _COMPRESSIONS[compression]
    px_per_cm = 1e4 / pixel_size_um
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        path,
        _tiles(mosaic, width, height, tile),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression=codec,
        compressionargs=codec_args,
        resolution=(px_per_cm, px_per_cm),
        resolutionunit="CENTIMETER",
        bigtiff=True,
        software="smearscan.synth",
        metadata=None,
    )
    logger.info(
        "wrote synthetic slide %s (%dx%d px, %.3f µm/px, %s tiles of %d px) in %.1f s",
        path,
        width,
        height,
        pixel_size_um,
        compression,
        tile,
        time.perf_counter() - started,
    )


def _validate(
    width: int, height: int, tile: int, compression: str, n_blocks: int, block_px: int, seed: int
) -> None:
    """Raise :class:`ConfigError` on invalid :func:`write_large_tiff` parameters."""
    if not (1 <= width <= _MAX_SIDE_PX and 1 <= height <= _MAX_SIDE_PX):
        raise ConfigError(
            f"width and height must be in [1, {_MAX_SIDE_PX}] px, got {width}x{height}"
        )
    if tile < 16 or tile % 16:
        raise ConfigError(f"tile must be a positive multiple of 16 px (TIFF rule), got {tile}")
    if compression not in _COMPRESSIONS:
        raise ConfigError(
            f"compression must be one of {sorted(_COMPRESSIONS)}, got {compression!r}"
        )
    if n_blocks < 1 or block_px < 256:
        raise ConfigError(f"need n_blocks >= 1 and block_px >= 256, got {n_blocks}, {block_px}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
