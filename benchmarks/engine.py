"""Benchmark the tiled engine on this machine.

Reports, measured in one run:

1. Field path: seconds per 2592x1944 synthetic field through
   ``process_slide`` with the model of ``--model`` (default: the default model;
   read, pixel size, resample, tiled segmentation, blending, Zarr write, cell
   stage, previews) and the peak RSS of
   this process; the post-processing part (cell stage: instances, labels,
   morphometry, types; then the overlay and thumbnail) on its own.
2. Stitched engine vs a plain whole-image forward pass of the same CNN
   (``TinyUNet``) on one field at the model scale: the ratio of wall times
   (the price of tiling, halo recomputation and blending).

Usage::

    .venv/bin/python benchmarks/engine.py [--model NAME|PATH.pt] [--fields 3] [--repeats 3]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from smearscan.config import DEFAULT_MODEL, ProcessConfig, TilingConfig
from smearscan.inference import TilePredictor
from smearscan.models.tiny import TinyUNet
from smearscan.pipeline import process_slide
from smearscan.registry import load_model
from smearscan.resample import resample_image
from smearscan.segmentation import plan_grid, segment_array
from smearscan.synth import generate_field, write_field

FIELD_W, FIELD_H, FIELD_PX_UM = 2592, 1944, 0.1


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_fields(model: str, n_fields: int, workdir: Path) -> dict[str, float]:
    """Seconds per field through ``process_slide``; the pixel size is estimated from RBCs."""
    paths = []
    for seed in range(n_fields):
        path = workdir / f"field_{seed}.png"
        write_field(generate_field(seed, FIELD_W, FIELD_H, FIELD_PX_UM), path)
        paths.append(path)
    config = ProcessConfig(model=model)
    process_slide(paths[0], config, workdir / "warmup.zarr")  # imports, first-call costs
    times, cell_times, preview_times = [], [], []
    for path in paths:
        start = time.perf_counter()
        result = process_slide(
            path, config, workdir / "out.zarr", previews_dir=workdir / "previews"
        )
        times.append(time.perf_counter() - start)
        cell_times.append(result.stage_seconds["cells"])
        preview_times.append(result.stage_seconds["preview"])
        print(
            f"  {path.name}: {times[-1]:.2f} s, pixel size {result.pixel_size_um:.4f} µm/px "
            f"({result.pixel_size_method}), {result.tiles} tiles, {result.wbc_count} WBC, "
            f"cell stage {cell_times[-1]:.2f} s, previews {preview_times[-1]:.2f} s"
        )
    post = [c + p for c, p in zip(cell_times, preview_times, strict=True)]
    return {
        "field_s_mean": statistics.mean(times),
        "field_s_max": max(times),
        "field_s_min": min(times),
        "cell_stage_s_per_field_mean": statistics.mean(cell_times),
        "cell_stage_s_per_field_max": max(cell_times),
        "preview_s_per_field_mean": statistics.mean(preview_times),
        "postprocess_s_per_field_max": max(post),
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_stitching(repeats: int, tile_sizes: tuple[int, ...]) -> dict[str, float]:
    """Wall time of the tiled, blended engine over a plain whole-image forward pass."""
    field = generate_field(0, FIELD_W, FIELD_H, FIELD_PX_UM)
    model = TinyUNet(width=16)
    image = resample_image(field.image, FIELD_PX_UM / model.spec.input_pixel_size_um)
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    image = np.ascontiguousarray(image[:h, :w])
    predictor = TilePredictor(model, torch.device("cpu"))
    whole = min(_timed(lambda: predictor.predict(image[None])) for _ in range(repeats))
    results = {"cnn_whole_image_s": whole}
    print(
        f"  image {w}x{h} at {model.spec.input_pixel_size_um} µm/px, halo "
        f"{model.spec.halo_px}, overlap 32; whole-image forward {whole:.3f} s"
    )
    for tile in tile_sizes:
        tiling = TilingConfig(tile_size_px=tile)
        grid = plan_grid(h, w, model.spec, tiling)
        tiled = min(
            _timed(lambda t=tiling: segment_array(image, model, tiling=t, batch_size=8))
            for _ in range(repeats)
        )
        print(
            f"  tile {tile}: {len(grid)} tiles of {grid.tile_shape}, {tiled:.3f} s, "
            f"ratio {tiled / whole:.2f}"
        )
        results[f"cnn_tiled_{tile}_s"] = tiled
        results[f"cnn_tiled_{tile}_over_whole_ratio"] = tiled / whole
    return results


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Run both benchmarks and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or PATH.pt")
    parser.add_argument("--fields", type=int, default=3, help="synthetic fields to time")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the CNN comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    spec = load_model(args.model).spec
    extra = ", ".join(f"{k} {v}" for k, v in spec.extra.items() if k in ("width", "depth"))
    print(
        f"model {args.model}: {spec.architecture} {extra}, input "
        f"{spec.input_pixel_size_um} µm/px, halo {spec.halo_px} px, tile {spec.tile_px} px"
    )
    with tempfile.TemporaryDirectory() as tmp:
        print("2592x1944 fields through process_slide:")
        results = bench_fields(args.model, args.fields, Path(tmp))
    print("stitched engine vs whole-image forward (TinyUNet width 16):")
    results |= bench_stitching(args.repeats, (256, 512, 1024))
    for key, value in results.items():
        print(f"{key:32s} {value:10.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
