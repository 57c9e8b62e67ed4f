"""OUT.zarr is OME-NGFF 0.5 that other tools accept: ome-zarr-models validates every
slide group and the root, ome_zarr.reader walks from the root to every slide, its
pyramid, labels and probabilities, and concurrent publishers keep the root's list."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Labels, Multiscales, Node, Reader
from ome_zarr_models.v05 import BioFormats2Raw, Image
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.ngff import full_resolution, pyramid_factors
from smearscan.synth import generate_field, write_field
from smearscan.zarr_store import create_slide_store, discard_slide_store, publish_slide_store

runner = CliRunner()
SAMPLES = Path(__file__).resolve().parents[1] / "sample_slides"
LABELS = ["classes", "cells", "nuclei"]


def _process(inputs: list[Path], out: Path, *options: str) -> Path:
    result = runner.invoke(app, ["process", *map(str, inputs), "--out", str(out), "--quiet",
                                 *options])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out.with_suffix(".zarr")


def _series(store: Path) -> list[str]:
    """The slide groups the root lists, checked against ome-zarr-models' bioformats2raw model."""
    root = BioFormats2Raw.from_zarr(zarr.open_group(store, mode="r"))
    series = root.ome_attributes.series
    assert isinstance(series, list)
    return [str(s) for s in series]


def _nodes(path: Path) -> dict[str, Node]:
    """ome_zarr.reader's nodes under ``path``, by their path relative to it."""
    location = parse_url(str(path))
    assert location is not None, f"{path} is not found by ome_zarr"
    return {str(node.zarr.path).rstrip("/")[len(str(path)) :].lstrip("/"): node
            for node in Reader(location)()}  # fmt: skip


def _check_slide(store: Path, key: str, n_classes: int) -> None:
    group = zarr.open_group(store / key, mode="r")
    image = Image.from_zarr(group)  # raises on any violation of NGFF 0.5
    ome = group.attrs["ome"]
    rgb, probs = ome["multiscales"]
    assert len(rgb["datasets"]) >= 2, "the image has a pyramid"
    assert [c["label"] for c in ome["omero"]["channels"]] == ["R", "G", "B"]
    assert image.labels is not None and image.labels.ome_attributes.version == "0.5"
    assert list(image.labels.ome_attributes.labels) == LABELS
    for name in LABELS:
        label_attrs = group[f"labels/{name}"].attrs["ome"]
        assert label_attrs["image-label"]["source"] == {"image": "../../"}
        assert len(label_attrs["multiscales"][0]["datasets"]) == len(rgb["datasets"])
        assert group[f"labels/{name}/s0"].metadata.dimension_names == ("y", "x")
    assert group["s0"].metadata.dimension_names == ("c", "y", "x")
    # probabilities: the second multiscales entry of the slide and an NGFF image of its own
    assert probs["name"] == "probabilities"
    assert probs["datasets"][0]["path"] == "probabilities/s0"
    assert group["probabilities/s0"].shape[0] == n_classes
    Image.from_zarr(group["probabilities"])

    nodes = _nodes(store / key)
    assert nodes[""].first(Multiscales) is not None
    assert nodes[""].data[0].shape == group["s0"].shape
    assert nodes["labels"].first(Labels) is not None
    for name in LABELS:
        node = nodes[f"labels/{name}"]
        assert node.first(Label) is not None and len(node.data) == len(rgb["datasets"])
    cells = np.asarray(nodes["labels/cells"].data[0])
    np.testing.assert_array_equal(cells, full_resolution(group, "labels/cells")[:])
    prob_nodes = _nodes(store / key / "probabilities")
    assert prob_nodes[""].data[0].shape == group["probabilities/s0"].shape


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ngff")
    inputs = root / "in"
    for seed, (w, h) in enumerate([(700, 520), (300, 900)]):
        write_field(generate_field(seed, width=w, height=h, pixel_size_um=0.25),
                    inputs / f"field{seed}.png")  # fmt: skip
    out = root / "out" / "report.xlsx"
    return _process([inputs], out, "--model", "classical", "--classifier", "rules",
                    "--pixel-size", "0.25", "--workers", "2")  # fmt: skip


def test_every_slide_group_validates_and_reads_back(synthetic_run: Path) -> None:
    series = _series(synthetic_run)
    assert series == ["field0.png", "field1.png"]
    for key in series:
        _check_slide(synthetic_run, key, n_classes=5)


def test_root_is_an_ngff_group_listing_every_slide(synthetic_run: Path) -> None:
    root = zarr.open_group(synthetic_run, mode="r")
    assert root.metadata.zarr_format == 3
    assert root.attrs["ome"]["version"] == "0.5"
    assert sorted(root.group_keys()) == _series(synthetic_run)
    # nothing but slide groups in the store: no scratch, lock or staging left inside
    assert sorted(p.name for p in synthetic_run.iterdir()) == ["field0.png", "field1.png",
                                                               "zarr.json"]  # fmt: skip
    for key in _series(synthetic_run):
        assert ".level0" not in zarr.open_group(synthetic_run / key, mode="r")


def _publish(store: Path, key: str) -> None:
    slide = create_slide_store(store, key, height=40, width=30, pixel_size_um=0.25)
    slide.classes[:] = 1
    publish_slide_store(slide)


def test_concurrent_publishers_keep_every_slide_in_the_root(tmp_path: Path) -> None:
    store = tmp_path / "r.zarr"
    keys = [f"s{i:02d}.png" for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: _publish(store, k), keys))
    assert _series(store) == keys
    discard_slide_store(store, keys[0])  # a slide failing on a re-run leaves the list too
    assert _series(store) == keys[1:]
    # a group renamed in by a publisher the list missed (killed before updating it)
    shutil.copytree(store / keys[1], store / "late.png")
    _publish(store, keys[2])
    assert _series(store) == sorted([*keys[1:], "late.png"])


def test_without_image_or_probabilities_the_group_still_validates(tmp_path: Path) -> None:
    store = tmp_path / "r.zarr"
    slide = create_slide_store(store, "a.png", height=600, width=300, pixel_size_um=0.5,
                               write_image=False, write_probabilities=False)  # fmt: skip
    slide.classes[:] = 2
    publish_slide_store(slide)
    group = zarr.open_group(store / "a.png", mode="r")
    Image.from_zarr(group)
    assert np.all(full_resolution(group, "labels/classes")[:] == 2)
    assert slide.image is None and slide.classes.shape == (600, 300)
    assert _series(store) == ["a.png"]


@pytest.mark.parametrize(
    ("shape", "factors"),
    [
        ((256, 256), (2,)),
        ((1, 900), ()),
        ((257, 100), (2,)),
        ((1015, 761), (2, 4)),
        ((4000, 3), (2,)),
    ],
)
def test_pyramid_ends_at_one_chunk(shape: tuple[int, int], factors: tuple[int, ...]) -> None:
    assert pyramid_factors(*shape, 256) == factors


def test_full_resolution_follows_the_metadata_of_older_stores(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=3)
    cells = group.create_group("labels").create_group("cells")
    cells.create_array("0", data=np.arange(6, dtype=np.int32).reshape(2, 3))
    cells.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}
    np.testing.assert_array_equal(
        full_resolution(group, "labels/cells")[:], np.arange(6).reshape(2, 3)
    )
    with pytest.raises(KeyError, match="multiscales"):
        full_resolution(group, "labels")


def _sample_run(tmp_path: Path, *options: str) -> tuple[Path, dict[str, Any]]:
    slides = sorted(SAMPLES.glob("bccd_*.jpg"))[:1] + sorted(SAMPLES.glob("pbc_*.jpg"))[:1]
    assert len(slides) == 2, "sample_slides/ holds the demo's slides"
    store = _process(slides, tmp_path / "demo" / "report.xlsx", *options)
    return store, zarr.open_group(store, mode="r").attrs["ome"]


def test_demo_slides_classical_validate(tmp_path: Path) -> None:
    store, _ = _sample_run(tmp_path, "--model", "classical", "--classifier", "rules")
    assert len(_series(store)) == 2
    for key in _series(store):
        _check_slide(store, key, n_classes=5)


def test_demo_slides_default_model_validate(tmp_path: Path) -> None:
    store, _ = _sample_run(tmp_path)
    assert len(_series(store)) == 2
    for key in _series(store):
        _check_slide(store, key, n_classes=5)
