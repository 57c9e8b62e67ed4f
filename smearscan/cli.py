"""The ``smearscan`` command: a thin adapter over :mod:`smearscan.batch`.

Exit codes of ``smearscan process``:

* 0: every slide processed;
* 1: some slides failed or were not run (see the Errors sheet and the log), or
  the report could not be written (a full disk: see the log);
* 2: usage or configuration error (nothing processed);
* 4: no slide found under the inputs (an empty report is still written).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smearscan import __version__, cli_calibrate, cli_models, cli_ops, cli_tools
from smearscan.cli_help import ReadableCommand
from smearscan.console import LogFormat, LogFormatOption, fail_usage
from smearscan.errors import ConfigError, SmearscanError

if TYPE_CHECKING:
    from smearscan.config import ProcessConfig

EXIT_OK, EXIT_SLIDES_FAILED, EXIT_LOCKED, EXIT_NOTHING_TO_DO = 0, 1, 3, 4

app = typer.Typer(
    name="smearscan",
    help="Automated blood-smear analysis: segment smear images into RBCs, WBCs "
    "(nucleus + cytoplasm) and platelets, and report per slide.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich markup would swallow "[classify]" (cli_help.py)
)
log = logging.getLogger("smearscan.cli")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smearscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Automated blood-smear analysis."""


def _overrides(**options: Any) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in options.items():
        section, key = dotted.split("__")
        sections.setdefault(section, {})[key] = value
    return sections


@app.command(cls=ReadableCommand)
def process(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT",
            help="Image files and/or directories (searched recursively). JPEG, PNG, BMP and "
            "TIFF (tiled, pyramidal, BigTIFF, OME-TIFF) are read.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="OUT.xlsx",
            help="Report path (.xlsx). Beside it: OUT_cells.parquet (the Cells rows), OUT.zarr "
            "(masks), OUT_previews/ (overlays, index.html) and OUT.log.",
            show_default=False,
        ),
    ],
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE.toml",
            help="TOML file with defaults for every option (see README).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="NAME|PATH.pt",
            help="Segmentation model: a name (see `smearscan models`) or a trained "
            "checkpoint PATH.pt (its sha256 sidecar is checked). Default: unet-v1 (trained "
            "U-Net); classical: the stain-based segmenter without weights.",
        ),
    ] = None,
    classifier: Annotated[
        str | None,
        typer.Option(
            metavar="NAME|PATH.pt",
            help="Cell classifier: a shipped name, a PATH.pt trained with `smearscan train "
            "--task classify` (its sha256 sidecar is checked), or rules (morphometric "
            "rules, no network). The blast score combines it with the blast morphology "
            "rule (thresholds in the [classify] section of --config).",
        ),
    ] = None,
    pixel_size: Annotated[
        float | None,
        typer.Option(
            "--pixel-size",
            metavar="UM",
            help="Pixel size of the inputs in µm/px. Default: the file's "
            "metadata, else estimated from the median RBC diameter (7.5 µm).",
        ),
    ] = None,
    glob: Annotated[
        list[str] | None,
        typer.Option(
            "--glob",
            metavar="PATTERN",
            help="Only process files matching this pattern (repeatable), e.g. "
            "'*.tif' or 'run1/**/*.jpg'.",
        ),
    ] = None,
    tile_size: Annotated[
        int | None,
        typer.Option(
            metavar="PX",
            help="Tile side in model pixels. Default: the model's own (1344 for unet-v1, "
            "1024 for classical).",
        ),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            metavar="PX", help="Blending ramp between tiles in model pixels. Default: 32."
        ),
    ] = None,
    halo: Annotated[
        int | None,
        typer.Option(
            metavar="PX",
            help="Context margin per tile side in model pixels. Default: the model's "
            "receptive field.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(metavar="N", help="Tiles per forward pass. Default: 8.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            metavar="auto|cpu|cuda", help="auto (CUDA when available), cpu or cuda. Default: auto."
        ),
    ] = None,
    amp: Annotated[
        bool | None, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA. Default: on.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Slides processed at once by the local Dask scheduler. Default: 1."
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Address of a dask.distributed scheduler (tcp://host:8786) to run the slides "
            "on instead of this machine.",
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            min=1,
            metavar="N",
            help="Refuse images whose header claims more pixels (width x height) than this, "
            "before decoding them (decompression bombs); such a slide fails at the read "
            "stage. Default: 2500000000 (about 50000 x 50000).",
        ),
    ] = None,
    probabilities: Annotated[
        bool | None,
        typer.Option(
            "--probabilities/--no-probabilities",
            help="Store the blended probability map in the Zarr output. Default: on.",
        ),
    ] = None,
    previews: Annotated[
        bool | None,
        typer.Option(
            "--previews/--no-previews",
            help="Write OUT_previews/: an overlay PNG (cell contours by type, blasts "
            "marked, ids) and a thumbnail per slide, and index.html to review them. "
            "Default: on.",
        ),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            metavar="REGEX|FILE.csv",
            help="Add up several field images into one patient/slide differential: a regular "
            "expression searched in each file name (the group is (?P<group>...), else group "
            "1, else the match; e.g. '^(Im\\d+)'), or a CSV manifest with columns "
            "image,group (image: file name or path relative to the input). Unmatched files "
            "are their own group. Default: every file its own group.",
        ),
    ] = None,
    min_wbc_count: Annotated[
        int | None,
        typer.Option(
            "--min-wbc-count",
            metavar="N",
            help="Flag LOW_WBC_COUNT on a group with fewer WBCs counted over its fields. "
            "Default: 100.",
        ),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="SQLite run ledger, e.g. one shared across nights: slides done before with "
            "the same content, models and settings are not run again, their stored results "
            "go into the report. Default: OUT_ledger.sqlite beside the report.",
            show_default=False,
        ),
    ] = None,
    no_ledger: Annotated[
        bool, typer.Option("--no-ledger", help="No ledger: every slide runs, nothing is recorded.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Run every slide again.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run slides that failed before again.")
    ] = False,
    slide_timeout: Annotated[
        float | None,
        typer.Option(
            "--slide-timeout",
            min=0.001,
            metavar="SECONDS",
            help="Seconds one slide may take; a slide still running then fails (stage "
            "timeout) and the batch goes on. Default: no limit.",
            show_default=False,
        ),
    ] = None,
    max_memory: Annotated[
        int | None,
        typer.Option(
            "--max-memory",
            min=1,
            metavar="MB",
            help="MB one slide may need (estimated before it starts from its size and the "
            "tiling); a slide needing more fails at the memory stage. Default: no limit.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="The report covers what this run processed and every slide the ledger "
            "records done or failed since then, whatever the inputs: an ISO date or time "
            "(2026-12-01, 2026-12-01T18:00), a span back from now (36h, 7d), or 'all'. "
            "Default: every slide of the inputs.",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="Seconds to wait when another run holds OUT.lock (writes the same "
            "output) or the lock of the same ledger (LEDGER.lock, e.g. "
            "OUT_ledger.sqlite.lock); without it such a run exits at "
            "once with code 3.",
        ),
    ] = 0.0,
    log_format: LogFormatOption = LogFormat.TEXT,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Only warnings and errors on the console, no progress bars."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Debug messages on the console and in the log file."),
    ] = False,
) -> None:
    """Segment smear images, find and measure the cells, and write the report.

    Writes OUT.xlsx, OUT_cells.parquet, OUT.zarr, OUT_previews/ and OUT.log.

    Exit codes: 0 all slides ok, 1 some slides failed, 2 usage or configuration
    error, 3 another run holds OUT.lock or the lock of the ledger (see --wait),
    4 no slide found (a re-run whose slides are all done exits 0). SIGINT or
    SIGTERM stops after the slides in progress (report written, exit 1); a second
    one aborts at once.
    """
    from smearscan.console import BatchProgress, is_interactive, setup_logging
    from smearscan.results import OutputPaths
    from smearscan.runlock import LockedError, lock_run

    if out.suffix.lower() != ".xlsx":
        fail_usage(f"--out must end in .xlsx, got {out}")
    config = _checked_config(  # usage errors (exit 2) before anything is written
        out,
        config_file,
        model,
        _overrides(
            scale__pixel_size_um=pixel_size,
            classify__classifier=classifier,
            batch__patterns=glob,
            tiling__tile_size_px=tile_size,
            tiling__overlap_px=overlap,
            tiling__halo_px=halo,
            inference__batch_size=batch_size,
            inference__device=device,
            inference__amp=amp,
            batch__workers=workers,
            batch__scheduler=scheduler,
            batch__ledger=str(ledger) if ledger else None,
            batch__use_ledger=False if no_ledger else None,
            batch__since=since,
            batch__slide_timeout_s=slide_timeout,
            batch__max_memory_mb=max_memory,
            batch__force=force or None,
            batch__retry_failed=retry_failed or None,
            batch__max_pixels=max_pixels,
            output__write_probabilities=probabilities,
            output__write_previews=previews,
            review__group_by=group_by,
            review__min_wbc_count=min_wbc_count,
        ),
    )
    try:  # the output's and the ledger's locks, before the log: a locked-out run writes nothing
        locks = lock_run(out, config, wait)
    except LockedError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_LOCKED) from None
    try:
        rich = is_interactive() and not quiet and log_format is LogFormat.TEXT
        console = setup_logging(
            OutputPaths.for_report(out).log,
            quiet=quiet,
            verbose=verbose,
            rich=rich,
            log_format=log_format,
        )
        try:
            code = _run_process(inputs, out, config, BatchProgress(console, rich=rich))
        except SmearscanError as exc:  # configuration, inputs that do not exist...
            fail_usage(str(exc))
    finally:
        locks.release()
    raise typer.Exit(code)


def _checked_config(
    out: Path, config_file: Path | None, model: str | None, sections: dict[str, Any]
) -> ProcessConfig:
    """The run's configuration (``--config`` then the options), with its outputs, model,
    classifier and device checked; any problem is a usage error (exit 2), found before
    the lock, the log or any output is written."""
    from smearscan.config import load_config
    from smearscan.model_checks import check_models
    from smearscan.output_checks import check_outputs

    try:
        config = load_config(config_file).with_overrides(model=model, **sections)
        if config.batch.since is not None and not config.batch.use_ledger:
            raise ConfigError("--since needs the run ledger (it was turned off: --no-ledger)")
        check_outputs(out, config)
        check_models(config)
    except SmearscanError as exc:
        fail_usage(str(exc))
    return config


def _run_process(inputs: list[Path], out: Path, config: Any, progress: Any) -> int:
    from smearscan.batch import process_batch
    from smearscan.errors import ReportWriteError

    try:
        with progress:
            batch = process_batch(
                inputs,
                out,
                config,
                on_result=progress.slide_done,
                progress=progress.tiles,
                on_start=lambda tasks: progress.start(len(tasks)),
            )
    except ReportWriteError as exc:  # the slides ran and are recorded; only the report is lost
        log.error("%s", exc)
        return EXIT_SLIDES_FAILED
    if not batch.results:
        log.warning(
            "no slide to report (none found under %s, or none in the --since period); "
            "wrote an empty report %s",
            ", ".join(map(str, inputs)),
            batch.outputs.report,
        )
        return EXIT_NOTHING_TO_DO
    if batch.stopped:
        not_run = sum(r.status == "skipped" and "stopped" in r.error for r in batch.results)
        log.warning(
            "stopped by %s: %d slide(s) not run; report %s written with the others",
            batch.stopped,
            not_run,
            batch.outputs.report,
        )
        return EXIT_SLIDES_FAILED
    failed = [r for r in batch.results if r.status != "ok"]  # failed, or skipped with a reason
    if failed:
        log.warning(
            "%d slide(s) not ok, each with its reason in the Errors sheet of %s: %s",
            len(failed),
            batch.outputs.report,
            ", ".join(r.slide for r in failed[:10]) + (", ..." if len(failed) > 10 else ""),
        )
    status = Counter(r.status for r in batch.results)
    log.info(
        "done: %d ok, %d failed, %d skipped (%d processed by this run); report %s, masks %s",
        status["ok"],
        status["failed"],
        status["skipped"],
        batch.processed,
        batch.outputs.report,
        batch.outputs.zarr,
    )
    return EXIT_SLIDES_FAILED if failed else EXIT_OK


cli_models.register(app)
cli_ops.register(app)
cli_tools.register(app)
cli_calibrate.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
