"""The files of ``deploy/``: systemd units, the nightly wrapper, crontab, Docker, Dask.

What can be checked without systemd, docker or a cluster: the files parse,
reference each other and existing files, and the wrapper runs a small batch.
"""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from smearscan.synth import generate_field, write_field

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
SERVICE = DEPLOY / "smearscan-nightly.service"
TIMER = DEPLOY / "smearscan-nightly.timer"
WRAPPER = DEPLOY / "nightly.sh"
SMEARSCAN_EXE = Path(sys.executable).with_name("smearscan")


def _unit(path: Path) -> configparser.ConfigParser:
    """A systemd unit file as INI (repeated keys such as Environment=: last one wins)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def test_timer_starts_the_oneshot_service_which_runs_the_wrapper() -> None:
    timer, service = _unit(TIMER), _unit(SERVICE)
    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].split()[0].endswith("/deploy/nightly.sh")
    assert "4" in service["Service"]["SuccessExitStatus"].split()
    assert service["Service"]["User"] != "root"
    env = re.findall(r"^Environment=(\w+)=", SERVICE.read_text(), flags=re.MULTILINE)
    assert {"SMEARSCAN", "SLIDES_DIR", "REPORTS_DIR"} <= set(env)
    assert set(env) <= set(re.findall(r"\$\{(\w+)", WRAPPER.read_text()))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    (root / "deploy").mkdir(parents=True)
    shutil.copy(WRAPPER, root / "deploy" / "nightly.sh")
    text = SERVICE.read_text().replace("/opt/smearscan", str(root))
    text = re.sub(r"^(User|Group)=.*$", "", text, flags=re.MULTILINE)  # the user exists not here
    (tmp_path / SERVICE.name).write_text(text)
    shutil.copy(TIMER, tmp_path / TIMER.name)
    result = subprocess.run(
        ["systemd-analyze", "verify", SERVICE.name, TIMER.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Unknown" not in output and "Invalid" not in output, output


def test_wrapper_syntax_and_mode() -> None:
    assert os.access(WRAPPER, os.X_OK)
    subprocess.run(["bash", "-n", str(WRAPPER)], check=True, timeout=30)


@pytest.mark.skipif(not SMEARSCAN_EXE.exists(), reason="smearscan console script not installed")
def test_wrapper_runs_a_dated_batch_with_json_logs_and_passes_the_exit_code(
    tmp_path: Path,
) -> None:
    slides = tmp_path / "slides"
    write_field(generate_field(0, width=600, height=500, pixel_size_um=0.1), slides / "f 0.png")
    (slides / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    env = {
        **os.environ,
        "SMEARSCAN": str(SMEARSCAN_EXE),
        "SLIDES_DIR": str(slides),
        "REPORTS_DIR": str(tmp_path / "reports"),
    }
    args = ["--model", "classical", "--pixel-size", "0.1", "--no-previews", "--quiet"]
    day = date.today().isoformat()
    result = subprocess.run(
        [str(WRAPPER), *args], env=env, capture_output=True, text=True, timeout=300
    )
    if date.today().isoformat() != day:  # ran across midnight
        day = date.today().isoformat()
    assert result.returncode == 1, result.stderr  # smearscan's "some slides failed"
    report = tmp_path / "reports" / day / f"smearscan-{day}.xlsx"
    assert report.is_file()
    lines = report.with_suffix(".log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert any(r["level"] == "ERROR" and "broken.png" in r["message"] for r in records)
    for line in result.stderr.splitlines():  # --quiet: warnings and errors, as JSON
        assert json.loads(line)["level"] in ("WARNING", "ERROR")


def test_wrapper_exit_2_when_the_report_folder_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "SMEARSCAN": "/bin/false", "REPORTS_DIR": str(blocker / "reports")}
    result = subprocess.run([str(WRAPPER)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot create" in result.stderr


def _cron_entries() -> list[str]:
    text = (DEPLOY / "crontab.example").read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_crontab_line_runs_the_wrapper_under_flock() -> None:
    (entry,) = _cron_entries()
    fields = entry.split(None, 5)
    assert fields[:5] == ["30", "1", "*", "*", "*"]
    words = shlex.split(fields[5])
    assert "flock" in words and words[words.index("flock") + 1 : words.index("flock") + 4] == [
        "-n",
        "-E",
        "3",
    ]
    assert words[-2].endswith("/deploy/nightly.sh")
    assert "%" not in fields[5]  # cron would cut the command at an unescaped %


@pytest.mark.skipif(shutil.which("flock") is None, reason="no flock(1)")
def test_flock_guard_exits_3_while_a_night_still_runs(tmp_path: Path) -> None:
    lock = tmp_path / "nightly.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = subprocess.run(["flock", "-n", "-E", "3", str(lock), "true"], timeout=30)
    assert result.returncode == 3
    assert subprocess.run(["flock", "-n", "-E", "3", str(lock), "true"], timeout=30).returncode == 0


def test_dockerfile_installs_torch_first_and_runs_smearscan_as_non_root() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    text = "\n".join(lines)
    assert text.index("torch==${TORCH_VERSION}") < text.index("pip install .")
    assert "ARG TORCH_VERSION=2.13.0" in text
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), source
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines[[i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT")][-1]] == (
        'ENTRYPOINT ["smearscan"]'
    )


def test_dask_compose_has_scheduler_cpu_and_gpu_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "dask" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["scheduler"]["command"][:1] == ["scheduler"]
    assert "8786" in services["scheduler"]["command"]
    for name in ("cpu-worker", "gpu-worker"):
        assert services[name]["command"][:2] == ["worker", "tcp://scheduler:8786"]
    gpu = services["gpu-worker"]
    assert "GPU=1" in gpu["command"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    volumes = {tuple(v.split(":")[:2]) for v in services["cpu-worker"]["volumes"]}
    assert volumes == {tuple(v.split(":")[:2]) for v in services["submit"]["volumes"]}
