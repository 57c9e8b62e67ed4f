"""Usage errors found before the first slide: outputs that cannot be written (item 9),
an unknown model or classifier and ``--device cuda`` without a GPU (item 15) are exit 2
with a clear message, and nothing (lock, log, ledger, Zarr store) is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.synth import generate_field, write_field

REPO = Path(__file__).resolve().parents[1]
FAST = ["--model", "classical", "--classifier", "rules", "--pixel-size", "0.1", "-q"]
runner = CliRunner()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preflight_slides")
    write_field(generate_field(5, width=300, height=240, pixel_size_um=0.1), root / "f1.png")
    return root


def _process(slides: Path, out: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["process", str(slides), "--out", str(out), *FAST, *args])
    return result.exit_code, result.output


def _written(folder: Path) -> set[str]:
    """What a run left in ``folder`` (besides what the test put there)."""
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# --------------------------------------------------------------------------- item 9: outputs


@pytest.mark.parametrize(
    ("occupied", "as_folder", "words"),
    [
        ("night.xlsx", True, "is a folder, not a file"),
        ("night.zarr", False, "is not a folder"),
        ("night.log", True, "is a folder, not a file"),
        ("night.lock", True, "is a folder, not a file"),
        ("night_previews", False, "is not a folder"),
        ("night_cells.parquet", True, "is a folder, not a file"),
        ("night_ledger.sqlite", True, "is a folder, not a file"),
    ],
)
def test_output_of_the_wrong_kind_is_exit_2_before_the_first_slide(
    slides: Path, tmp_path: Path, occupied: str, as_folder: bool, words: str
):
    target = tmp_path / occupied
    if as_folder:
        target.mkdir()
    else:
        target.write_text("not mine")
    code, output = _process(slides, tmp_path / "night.xlsx")
    assert code == 2, output
    assert str(target) in output and words in output, output
    assert _written(tmp_path) == {occupied}  # no lock, log, ledger or Zarr store


def test_out_under_a_file_is_exit_2(slides: Path, tmp_path: Path):
    (tmp_path / "plain").write_text("a file")
    code, output = _process(slides, tmp_path / "plain" / "sub" / "r.xlsx")
    assert code == 2 and "is not a folder" in output and "plain" in output, output


def test_ledger_of_the_wrong_kind_is_exit_2(slides: Path, tmp_path: Path):
    (tmp_path / "shared.sqlite").mkdir()
    out = tmp_path / "out" / "r.xlsx"
    code, output = _process(slides, out, "--ledger", str(tmp_path / "shared.sqlite"))
    assert code == 2 and "shared.sqlite" in output and "run ledger" in output, output
    assert not out.parent.exists()


def _run_on_read_only_mount(mount: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``smearscan process ...`` in a private mount namespace where ``mount`` is a
    read-only tmpfs (nothing outside the namespace sees the mount)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("unshare/mount not installed: cannot make a read-only mount")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro,size=1m tmpfs '{mount}'"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {probe.stderr.strip()}")
    command = " ".join(f"'{a}'" for a in [sys.executable, "-m", "smearscan", "process", *args])
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro,size=1m tmpfs '{mount}' && {command}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
    )


def test_out_on_a_read_only_mount_is_exit_2(slides: Path, tmp_path: Path):
    mount = tmp_path / "ro"
    mount.mkdir()
    proc = _run_on_read_only_mount(mount, str(slides), "--out", str(mount / "r.xlsx"), *FAST)
    assert proc.returncode == 2, proc.stderr
    assert "read-only file system" in proc.stderr and str(mount) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_ledger_on_a_read_only_mount_is_exit_2(slides: Path, tmp_path: Path):
    mount = tmp_path / "ro"
    mount.mkdir()
    out = tmp_path / "out" / "r.xlsx"
    ledger = mount / "ledger.sqlite"
    proc = _run_on_read_only_mount(
        mount, str(slides), "--out", str(out), "--ledger", str(ledger), *FAST
    )
    assert proc.returncode == 2, proc.stderr
    assert "read-only file system" in proc.stderr and "ledger" in proc.stderr, proc.stderr
    assert not out.parent.exists()  # not the report, log or lock either


def test_writable_outputs_still_run(slides: Path, tmp_path: Path):
    out = tmp_path / "new" / "deeper" / "r.xlsx"
    code, output = _process(slides, out, "--no-previews")
    assert code == 0, output
    assert out.is_file() and out.with_suffix(".zarr").is_dir()


# ----------------------------------------------------- item 15: model, classifier, device


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "no-such-model"], ["--model", "no-such-model", "classical"]),
        (["--model", "missing.pt"], ["--model", "missing.pt", "not found"]),
        (["--classifier", "no-such-classifier"], ["--classifier", "no-such-classifier"]),
        (["--classifier", "nope.pt"], ["--classifier", "nope.pt", "not found"]),
    ],
)
def test_unknown_model_or_classifier_is_exit_2_and_writes_nothing(
    slides: Path, tmp_path: Path, args: list[str], words: list[str]
):
    out = tmp_path / "out" / "r.xlsx"
    code, output = _process(slides, out, *args)
    assert code == 2, output
    for word in words:
        assert word in output, (word, output)
    assert not out.parent.exists()  # no ledger, Zarr store, log or lock


def test_checkpoint_without_its_sidecar_is_exit_2(slides: Path, tmp_path: Path):
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"weights")
    out = tmp_path / "out" / "r.xlsx"
    code, output = _process(slides, out, "--model", str(checkpoint))
    assert code == 2 and "mine.pt" in output and "sha256" in output, output
    assert not out.parent.exists()


def test_device_cuda_without_a_gpu_is_exit_2(slides: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: --device cuda is valid here")
    out = tmp_path / "out" / "r.xlsx"
    code, output = _process(slides, out, "--device", "cuda")
    assert code == 2 and "cuda" in output and "no CUDA device" in output, output
    assert not out.parent.exists()
