"""What a killed run left in a run's own outputs, removed when the next run starts.

A run killed mid-write (SIGKILL, a power cut, a second SIGTERM) can leave
hidden temporary files of :func:`smearscan.atomic.atomic_write`
(``.OUT-XXXXXXXX.xlsx``, ``.OUT_cells-XXXXXXXX.parquet``,
``OUT_previews/.index-XXXXXXXX.html``, ``OUT_previews/.<key>-XXXXXXXX.png``,
``LEDGER_results/.<id>-XXXXXXXX.json``) and staged Zarr groups in
``.OUT.zarr.partial/``. :func:`clear_leftovers` removes them at the start of
every run, whether or not it has slides to process, carefully: only names of
the temporary-file pattern, in the report's folder only those of the run's
own files (the folder may hold anything else), and no module that imports
zarr or torch (a re-run with nothing to do stays quick).

Call it only while holding the output's lock (``OUT.lock``, and the ledger's
lock for a shared ``--ledger``): then no other run is writing there.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from smearscan.atomic import remove_stale_temps, remove_stale_temps_in
from smearscan.results import OutputPaths
from smearscan.review_page import THUMBNAIL_DIR

log = logging.getLogger(__name__)


def zarr_staging_dir(zarr_path: Path) -> Path:
    """Where the slide groups of ``zarr_path`` are built before they are published:
    ``<parent>/.<name>.partial`` of the resolved store (see :mod:`smearscan.zarr_store`)."""
    root = Path(zarr_path).resolve()
    return root.parent / f".{root.name}.partial"


def _remove_staging(zarr_path: Path) -> None:
    staging = zarr_staging_dir(zarr_path)
    if staging.is_symlink() or staging.is_file():
        log.info("removing staging leftovers %s", staging)
        staging.unlink()
    elif staging.is_dir():
        log.info("removing staging leftovers %s", staging)
        shutil.rmtree(staging)


def clear_leftovers(outputs: OutputPaths, results_dir: Path | None = None) -> None:
    """Remove the temporary files and staged Zarr groups that killed runs left.

    Args:
        outputs: The run's output paths.
        results_dir: The ledger's stored results (``LEDGER_results/``), or None
            without a ledger.
    """
    for target in (outputs.report, outputs.cells, outputs.cells.with_suffix(".csv")):
        remove_stale_temps(target)
    remove_stale_temps(outputs.previews / "index.html")
    remove_stale_temps_in(outputs.previews, ".png")
    remove_stale_temps_in(outputs.previews / THUMBNAIL_DIR, ".png")
    if results_dir is not None:
        remove_stale_temps_in(results_dir, ".json")
    _remove_staging(outputs.zarr)
