"""Exception hierarchy of smearscan.

Every error a user can cause derives from :class:`SmearscanError`, so the CLI
can map it to a clear message and an exit code without a traceback. Errors
about one input file carry its path so a batch can record them and go on.
"""

from __future__ import annotations

from pathlib import Path


class SmearscanError(Exception):
    """Base class of all errors smearscan raises on purpose."""


class ConfigError(SmearscanError):
    """An option or configuration value is invalid (bad value, bad combination)."""


class InputError(SmearscanError):
    """One input file cannot be used.

    Args:
        path: The offending file.
        reason: What is wrong with it and, where useful, what to do.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedFormatError(InputError):
    """The file is not an image format smearscan reads (or not an image at all)."""


class CorruptImageError(InputError):
    """The file looks like a supported image but cannot be decoded (truncated, damaged, empty)."""


class ImageTooLargeError(InputError):
    """The file's header claims more pixels than allowed (``--max-pixels``): a possible
    decompression bomb, refused before any pixel is decoded."""


class FingerprintTimeoutError(InputError):
    """Hashing a file for the run ledger took longer than ``--slide-timeout`` (a huge file)."""


class OutputPathError(SmearscanError):
    """An output name (a slide's Zarr group or preview file) would leave its output directory."""


class OutputLocationError(SmearscanError):
    """A run's output cannot be written where it goes (a folder where a file goes or the
    reverse, a read-only folder or mount); found before the first slide runs."""


class ReportWriteError(SmearscanError):
    """The report (``OUT.xlsx`` or ``OUT_cells.parquet``) could not be written (a full
    disk, say) after the slides ran; the ledger has recorded them."""


class ModelError(SmearscanError):
    """A segmentation model cannot be built, loaded or run (unknown name, bad weights, bad spec)."""


class ScaleEstimationError(SmearscanError):
    """The pixel size could not be estimated from the image (too few red cells found)."""


class ProcessingError(SmearscanError):
    """A pipeline stage failed on one slide.

    Args:
        stage: Pipeline stage that failed (``read``, ``scale``, ``segment``, ``write``...).
        message: What went wrong.
    """

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        self.message = message
        super().__init__(f"{stage}: {message}")
