"""``smearscan calibrate INPUT...``: each camera's pixel size, once, when a lab installs the tool.

Reads the slides, groups those without a camera profile or a stored pixel
size by camera signature (:mod:`smearscan.cameras`), pools each camera's RBC
diameters (:mod:`smearscan.calibration`) and prints one line per camera: the
pixel size, its 95 % interval, the fields and RBCs used. ``--snippet FILE``
writes the ``[[scale.cameras]]`` tables for the config file, so that
``smearscan process --config`` then gives each camera exactly that value.
Registered on the ``smearscan`` app by :mod:`smearscan.cli`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from smearscan.cli_help import ReadableCommand
from smearscan.console import LogFormat, LogFormatOption, fail_usage

log = logging.getLogger(__name__)


def calibrate(
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="INPUT...", help="Slide files and/or folders of one lab."),
    ],
    config_path: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="TOML config: cameras that already have a profile are left out.",
        ),
    ] = None,
    snippet: Annotated[
        Path | None,
        typer.Option(
            "--snippet",
            metavar="FILE",
            help="Write the camera profiles ([[scale.cameras]] tables) to paste into the "
            "config file.",
        ),
    ] = None,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Estimate each camera's pixel size from the red cells of all its fields.

    Prints one line per camera signature (image size, EXIF/TIFF make and model,
    folder) and a camera-profile snippet for the config file. Exit 0, or 1 when
    some camera could not be calibrated (too few red cells), 2 on usage errors.
    """
    from smearscan.batch import SlideTask
    from smearscan.cameras import profile_snippet
    from smearscan.config import load_config
    from smearscan.console import setup_logging
    from smearscan.errors import SmearscanError
    from smearscan.inputs import list_inputs
    from smearscan.scale_plan import survey_cameras
    from smearscan.slide_keys import unique_keys

    setup_logging(None, quiet=True, verbose=False, rich=False, log_format=log_format)
    try:
        config = load_config(config_path)
        sources = [s for s in list_inputs(inputs, config.batch.patterns) if not s.problem]
    except SmearscanError as exc:
        fail_usage(str(exc))
    keys = unique_keys([s.relative for s in sources], [s.path for s in sources])
    tasks = [SlideTask(s.path, s.relative, k) for s, k in zip(sources, keys, strict=True)]
    cameras = survey_cameras(tasks, config)
    entries, failed = [], 0
    for found, info, slides in cameras:
        if isinstance(found, str):
            failed += 1
            typer.echo(f"{found}")
            continue
        typer.echo(f"{found.summary()}; {slides} slides")
        entries.append((found.signature, found.pixel_size_um, info))
    if not cameras:
        typer.echo("no slide left to calibrate (all have a camera profile or a stored size)")
    text = profile_snippet(entries) if entries else ""
    if text:
        typer.echo("\n# camera profiles for the config file:\n" + text)
    if snippet is not None and text:
        snippet.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {snippet}")
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the ``smearscan`` app."""
    app.command(cls=ReadableCommand)(calibrate)
