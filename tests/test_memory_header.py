"""``--max-memory`` holds before a JPEG/PNG/BMP is decoded (issue #13, item 14).

A 166 MP PNG used to be decoded whole before the memory check, which then
counted the decoded source as 48 MiB (four 2048² chunks) when it was 476 MiB;
with ``--max-memory 600`` the process still peaked at 1.9 GB. The decode's cost
now comes from the header (width x height x channels x bytes, plus the file and
the copies of decoding) and a slide over the limit fails at ``memory`` unread.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from smearscan.image_header import check_header
from smearscan.limits import SlideMemoryError, check_decode_memory

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20

#: Runs one batch in a fresh interpreter and prints its outcome and peak RSS as JSON.
_RUN = """
import dataclasses, json, resource, sys
from pathlib import Path
from smearscan.batch import process_batch
from smearscan.config import ProcessConfig
config = ProcessConfig(model="classical").with_overrides(
    classify={"classifier": "rules"}, scale={"pixel_size_um": 0.2},
    batch={"use_ledger": False, "max_memory_mb": int(sys.argv[3])},
)
output = dataclasses.replace(config.output, write_previews=False)
config = dataclasses.replace(config, output=output)
(r,) = process_batch([Path(sys.argv[1])], Path(sys.argv[2]), config).results
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"status": r.status, "stage": r.error_stage, "error": r.error, "peak": peak}))
"""


def write_uniform_png(path: Path, width: int, height: int) -> None:
    """An 8-bit RGB PNG of one colour, written row by row (a few hundred KiB on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\xf0\xe8\xe0" * width  # filter byte, then RGB pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _run(folder: Path, out: Path, limit_mb: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(folder), str(out), str(limit_mb)],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_decode_cost_comes_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    write_uniform_png(path, 12000, 12000)
    header = check_header(path, None)
    pixels = 12000 * 12000
    assert (header.channels, header.bytes_per_sample) == (3, 1)
    assert header.decode_bytes == header.file_bytes + 2 * 3 * pixels + 3 * pixels
    assert path.stat().st_size < 2 * MIB  # small on disk, 412 MiB decoded
    check_decode_memory(header, None)
    check_decode_memory(header, 2000)
    with pytest.raises(SlideMemoryError, match=r"12000 x 12000 PNG whole needs about 1236 MiB"):
        check_decode_memory(header, 600)


def test_a_png_over_the_memory_limit_fails_at_memory_without_decoding(tmp_path: Path) -> None:
    """165 MP (472 MiB decoded) with --max-memory 600: fails at ``memory``, and the process
    peak stays near that of a run on a tiny image (it used to add about 1.4 GiB)."""
    big, tiny = tmp_path / "big", tmp_path / "tiny"
    big.mkdir()
    tiny.mkdir()
    write_uniform_png(big / "big.png", 15000, 11000)
    write_uniform_png(tiny / "tiny.png", 64, 64)
    decoded = 15000 * 11000 * 3
    outcome = _run(big, tmp_path / "big.xlsx", 600)
    baseline = _run(tiny, tmp_path / "tiny.xlsx", 600)
    added = int(str(outcome["peak"])) - int(str(baseline["peak"]))
    assert added < decoded / 4, f"the refused slide added {added / MIB:.0f} MiB to the peak"
    assert (outcome["status"], outcome["stage"]) == ("failed", "memory"), outcome
    assert "15000 x 11000 PNG whole needs about 1417 MiB" in str(outcome["error"])
    assert "472 MiB decoded" in str(outcome["error"])
    assert "more than --max-memory 600 MB" in str(outcome["error"])
