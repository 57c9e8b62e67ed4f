"""Per-slide limits of a batch: a time limit (``--slide-timeout``) and a memory limit
(``--max-memory``).

A slide over either limit fails with the reason, like any other failing
slide, and the batch goes on with the others.

Time: :func:`deadline` starts the clock of one slide in the thread that runs
it; :func:`check_deadline` is called between stages, after every batch of
tiles and between blocks of the cell stage, and raises
:class:`SlideTimeoutError` once the slide has run longer than allowed. The
check is cooperative: one library call that blocks (a decoder stuck on an
unreachable network file) cannot be interrupted inside the process. The
ledger is the backstop for that case: a slide whose runs were killed
:data:`~smearscan.ledger.MAX_INTERRUPTIONS` times is not tried again
without ``--retry-failed``, so it cannot stall every following night.

Memory: a JPEG, PNG or BMP is decoded whole when it is opened, so first
:func:`check_decode_memory` compares what that decode costs, from the
header's size alone (:attr:`smearscan.image_header.ImageHeader.decode_bytes`:
the file, width x height x channels x bytes per sample twice, the 8-bit RGB
result), with ``--max-memory``, and a slide over it fails at stage ``memory``
before a pixel is decoded. Then :func:`memory_estimate` adds what one slide
holds at its peak (the decoded source, whole for a JPEG/PNG/BMP and the
chunks under one window for a TIFF, the blended masks, one batch of tiles
through the network) before segmentation; :func:`check_memory` fails the
slide when that is more than ``--max-memory``. It is an estimate from the slide's shape and
the settings (the network's working set per input pixel was measured for the
shipped models), not a hard process limit.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smearscan.errors import SmearscanError

if TYPE_CHECKING:
    from smearscan.image_header import ImageHeader

#: Peak bytes per input pixel of one forward pass on the CPU (float32, activations
#: and output): unet-v1 measured 324-365 B/px (tiles of 512-1344 px); the
#: classical segmenter 59 B/px. Rounded up.
NETWORK_BYTES_PER_PX = 400
CLASSICAL_BYTES_PER_PX = 64

_MIB = 1 << 20


class SlideTimeoutError(SmearscanError):
    """The slide ran longer than ``--slide-timeout``."""


class SlideMemoryError(SmearscanError):
    """The slide would need more memory than ``--max-memory``."""


@dataclass(frozen=True)
class _Deadline:
    limit_s: float
    ends: float  # time.monotonic() value


_current: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "smearscan_slide_deadline", default=None
)


@contextmanager
def deadline(limit_s: float | None) -> Iterator[None]:
    """Give the slide run inside the block ``limit_s`` seconds (None: no limit).

    The deadline belongs to the calling thread's context, so slides running
    concurrently in threads each have their own.
    """
    if limit_s is None:
        yield
        return
    token = _current.set(_Deadline(limit_s, time.monotonic() + limit_s))
    try:
        yield
    finally:
        _current.reset(token)


def check_deadline(where: str = "") -> None:
    """Raise :class:`SlideTimeoutError` when the current slide is past its deadline.

    Args:
        where: What was about to run, for the message (a stage name).
    """
    current = _current.get()
    if current is None or time.monotonic() <= current.ends:
        return
    at = f" (stopped before {where})" if where else ""
    raise SlideTimeoutError(f"took longer than --slide-timeout {current.limit_s:g} s{at}")


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one slide, MiB, by what holds it."""

    source_mib: float
    masks_mib: float
    inference_mib: float

    @property
    def total_mib(self) -> float:
        return self.source_mib + self.masks_mib + self.inference_mib

    def describe(self) -> str:
        return (
            f"about {self.total_mib:.0f} MiB (decoded source {self.source_mib:.0f}, "
            f"masks {self.masks_mib:.0f}, inference {self.inference_mib:.0f})"
        )


def memory_estimate(
    *,
    source_bytes: int,
    mask_shape: tuple[int, int],
    n_classes: int,
    in_memory: bool,
    stream_px: int,
    tile_px: int,
    batch_size: int,
    network: bool,
) -> MemoryEstimate:
    """What one slide holds at its peak.

    Args:
        source_bytes: Decoded source pixels held at once: the whole image for a
            JPEG or PNG, the chunks under one window for a tiled TIFF.
        mask_shape: ``(height, width)`` of the masks at the model scale, pixels.
        n_classes: Classes of the model.
        in_memory: The probabilities of the whole slide are blended in memory
            (float32 per class plus the weights), else band by band into Zarr.
        stream_px: Pixels (per class) the streaming merger holds at once: the
            boundary block row across the slide plus the open blocks of a band.
        tile_px: Side of one tile (halo included), pixels.
        batch_size: Tiles per forward pass.
        network: A neural network (else the classical segmenter).
    """
    height, width = mask_shape
    held = height * width if in_memory else min(height * width, stream_px)
    per_px = NETWORK_BYTES_PER_PX if network else CLASSICAL_BYTES_PER_PX
    return MemoryEstimate(
        source_mib=source_bytes / _MIB,  # float32 sums and weights, then uint8 outputs
        masks_mib=(n_classes + 1) * 5 * held / _MIB,
        inference_mib=batch_size * tile_px * tile_px * per_px / _MIB,
    )


def check_memory(estimate: MemoryEstimate, limit_mb: int | None) -> None:
    """Raise :class:`SlideMemoryError` when ``estimate`` exceeds ``limit_mb`` (None: no limit)."""
    if limit_mb is not None and estimate.total_mib > limit_mb:
        raise SlideMemoryError(f"needs {estimate.describe()}, more than --max-memory {limit_mb} MB")


def check_decode_memory(header: ImageHeader, limit_mb: int | None) -> None:
    """Fail before decoding when decoding the image whole would exceed ``limit_mb``.

    Only JPEG, PNG and BMP are decoded whole (a TIFF is read chunk by chunk
    and judged by :func:`memory_estimate`).

    Args:
        header: What the file's header claims (:func:`smearscan.image_header.check_header`).
        limit_mb: ``--max-memory`` in MiB (None: no limit).

    Raises:
        SlideMemoryError: The decode alone needs more than ``limit_mb``.
    """
    need = header.decode_bytes / _MIB
    if limit_mb is None or not header.decoded_whole or need <= limit_mb:
        return
    decoded = header.width * header.height * header.channels * header.bytes_per_sample / _MIB
    raise SlideMemoryError(
        f"decoding the {header.width} x {header.height} {header.format.upper()} whole needs "
        f"about {need:.0f} MiB ({header.channels} x {8 * header.bytes_per_sample}-bit samples: "
        f"{decoded:.0f} MiB decoded, twice, plus the 8-bit RGB copy and the file), more than "
        f"--max-memory {limit_mb} MB; refused before decoding; convert it to a tiled TIFF "
        "(read tile by tile) or raise --max-memory"
    )
