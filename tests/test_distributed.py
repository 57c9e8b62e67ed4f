"""Slides sent to a real dask.distributed cluster give the same masks as a local run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from smearscan.config import BatchConfig, ProcessConfig, ScaleConfig
from smearscan.pipeline import process_batch
from smearscan.synth import generate_field, write_field

distributed = pytest.importorskip("distributed")


def test_process_batch_on_local_cluster(tmp_path: Path):
    slides = tmp_path / "slides"
    for seed in (21, 22, 23):
        write_field(
            generate_field(seed, width=500, height=400, pixel_size_um=0.1), slides / f"s{seed}.png"
        )
    (slides / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = ProcessConfig(scale=ScaleConfig(pixel_size_um=0.1))
    local = process_batch([slides], tmp_path / "local" / "r.xlsx", config)

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote_config = ProcessConfig(
            scale=ScaleConfig(pixel_size_um=0.1),
            batch=BatchConfig(scheduler=cluster.scheduler_address),
        )
        seen: list[str] = []
        remote = process_batch(
            [slides],
            tmp_path / "remote" / "r.xlsx",
            remote_config,
            on_result=lambda r: seen.append(r.slide),
        )

    assert sorted(seen) == ["broken.jpg", "s21.png", "s22.png", "s23.png"]
    assert [r.status for r in remote.results] == [r.status for r in local.results]
    assert [r.slide for r in remote.failed] == ["broken.jpg"]
    for a, b in zip(local.results, remote.results, strict=True):
        if a.status != "ok":
            continue
        ca = zarr.open_group(a.mask_path, mode="r")["labels/classes/s0"][:]
        cb = zarr.open_group(b.mask_path, mode="r")["labels/classes/s0"][:]
        np.testing.assert_array_equal(ca, cb)
    assert (tmp_path / "remote" / "r.xlsx").is_file()


def test_unreachable_scheduler_is_a_config_error(tmp_path: Path):
    from smearscan.errors import ConfigError

    (tmp_path / "s").mkdir()
    write_field(
        generate_field(1, width=300, height=300, pixel_size_um=0.1), tmp_path / "s" / "a.png"
    )
    config = ProcessConfig(
        scale=ScaleConfig(pixel_size_um=0.1), batch=BatchConfig(scheduler="tcp://127.0.0.1:1")
    )
    with pytest.raises(ConfigError, match="cannot reach"):
        process_batch([tmp_path / "s"], tmp_path / "r.xlsx", config)
