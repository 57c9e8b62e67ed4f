"""The command line: help, exit codes, outputs beside the report, log file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.synth import generate_field, write_field

runner = CliRunner()

PROCESS_OPTIONS = [
    "--out",
    "--config",
    "--model",
    "--pixel-size",
    "--glob",
    "--tile-size",
    "--overlap",
    "--halo",
    "--batch-size",
    "--device",
    "--amp",
    "--workers",
    "--scheduler",
    "--probabilities",
    "--group-by",
    "--min-wbc-count",
    "--log-format",
    "--classifier",
    "--max-pixels",
    "--ledger",
    "--force",
    "--retry-failed",
    "--wait",
    "--quiet",
    "--verbose",
]


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_slides")
    write_field(generate_field(11, width=600, height=450, pixel_size_um=0.1), root / "f1.png")
    return root


def test_help_explains_every_option():
    top = runner.invoke(app, ["--help"], terminal_width=200)
    assert top.exit_code == 0 and "process" in top.output and "synth" in top.output
    result = runner.invoke(app, ["process", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in PROCESS_OPTIONS:
        assert option in result.output, option
    assert "Exit codes" in result.output


def test_all_ok_exit_0_and_outputs_beside_report(slides: Path, tmp_path: Path):
    out = tmp_path / "night" / "report.xlsx"
    result = runner.invoke(
        app, ["process", str(slides), "--out", str(out), "--pixel-size", "0.1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".zarr").is_dir()
    log_text = out.with_suffix(".log").read_text()
    assert "f1.png" in log_text and "report written" in log_text


def test_failed_slide_exit_1(slides: Path, tmp_path: Path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = runner.invoke(
        app,
        [
            "process",
            str(slides),
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "r.xlsx"),
            "--pixel-size",
            "0.1",
            "-q",
        ],
    )
    assert result.exit_code == 1


def test_nothing_to_do_exit_4(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["process", str(tmp_path / "empty"), "--out", str(tmp_path / "r.xlsx"), "-q"]
    )
    assert result.exit_code == 4
    assert (tmp_path / "r.xlsx").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--tile-size", "0"],
        ["--device", "tpu"],
        ["--model", "no-such-model"],
        ["--pixel-size", "-1"],
    ],
)
def test_bad_options_exit_2(slides: Path, tmp_path: Path, args: list[str]):
    result = runner.invoke(
        app, ["process", str(slides), "--out", str(tmp_path / "r.xlsx"), "-q", *args]
    )
    assert result.exit_code == 2, result.output  # an unknown model too: nothing is run


def test_missing_input_and_bad_report_name_exit_2(tmp_path: Path):
    result = runner.invoke(
        app, ["process", str(tmp_path / "nope"), "--out", str(tmp_path / "r.xlsx")]
    )
    assert result.exit_code == 2 and "nope" in result.output
    result = runner.invoke(app, ["process", str(tmp_path), "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 2


def test_config_file(slides: Path, tmp_path: Path):
    config = tmp_path / "smearscan.toml"
    config.write_text("[scale]\npixel_size_um = 0.1\n[tiling]\ntile_size_px = 384\n")
    out = tmp_path / "r.xlsx"
    result = runner.invoke(
        app, ["process", str(slides), "--out", str(out), "--config", str(config), "-q"]
    )
    assert result.exit_code == 0, result.output
    config.write_text("[tiling]\ntile_sise_px = 384\n")
    result = runner.invoke(
        app, ["process", str(slides), "--out", str(out), "--config", str(config), "-q"]
    )
    assert result.exit_code == 2 and "tile_sise_px" in result.output


def test_console_script_runs_as_module(slides: Path, tmp_path: Path):
    """The real entry point in a subprocess, as cron runs it (no TTY: plain log lines)."""
    out = tmp_path / "r.xlsx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "smearscan",
            "process",
            str(slides),
            "--out",
            str(out),
            "--pixel-size",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[1/1] f1.png ok" in proc.stderr
