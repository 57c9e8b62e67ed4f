"""``smearscan models`` and ``smearscan synth``: listing what ``--model`` and
``--classifier`` accept, and writing synthetic smear fields; registered on the
``smearscan`` app by :mod:`smearscan.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smearscan.cli_help import ReadableCommand


def models() -> None:
    """List the segmentation models that --model accepts and the cell classifiers of
    --classifier."""
    from smearscan.classify import available_classifiers
    from smearscan.registry import available_models

    typer.echo("segmentation models (--model):")
    for name, description in available_models().items():
        typer.echo(f"  {name:12s} {description}")
    typer.echo("cell classifiers (--classifier):")
    for name, description in available_classifiers().items():
        typer.echo(f"  {name:12s} {description}")


def synth(
    out_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder to write the synthetic fields into.")
    ],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of fields.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the first field (then seed+1...).")] = 0,
    width: Annotated[int, typer.Option(min=64, help="Field width in pixels.")] = 2592,
    height: Annotated[int, typer.Option(min=64, help="Field height in pixels.")] = 1944,
    blasts: Annotated[
        int, typer.Option(min=0, help="Blast-like cells planted per field (0: a normal smear).")
    ] = 0,
) -> None:
    """Write synthetic smear fields with exact ground truth (PNG + _truth.npz/.json)."""
    from smearscan.synth import write_sample_set

    paths = write_sample_set(out_dir, n=count, seed=seed, width=width, height=height, blasts=blasts)
    for path in paths:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``synth`` to the ``smearscan`` app."""
    app.command()(models)
    app.command(cls=ReadableCommand)(synth)
