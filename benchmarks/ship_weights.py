"""Copy a trained checkpoint into the package as shipped weights (``make weights``).

Reads ``best.pt`` of a ``smearscan train`` run (its sha256 sidecar checked),
names the model (and, with ``--tile``, records its preferred tile side: 1344 px
holds a 2592x1944 camera field at 0.1 µm/px, 1296x972 px at 0.2 µm/px, in one
tile), drops nothing but the training state (``best.pt`` holds none)
and writes ``smearscan/weights/NAME.pt`` with its ``.sha256`` sidecar. Then
prints the ``SHIPPED`` entry of ``smearscan/registry.py`` with the new digest:
the registry refuses the file unless that digest is recorded there.

Usage::

    .venv/bin/python benchmarks/ship_weights.py runs/cv/fold1/best.pt --name unet-v1 --tile 1344
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from smearscan.checkpoint import load_checkpoint, save_checkpoint
from smearscan.registry import WEIGHTS_DIR


def main() -> None:
    """Write the shipped copy and print its registry entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="best.pt of a training run")
    parser.add_argument("--name", required=True, help="model name for --model")
    parser.add_argument("--description", default="", help="one line for `smearscan models`")
    parser.add_argument("--tile", type=int, help="preferred tile side (model px) to record")
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model
    model.spec = dataclasses.replace(
        loaded.spec, name=args.name, tile_px=args.tile or loaded.spec.tile_px
    )
    target = WEIGHTS_DIR / f"{args.name}.pt"
    metadata = {**loaded.metadata, "trained_checkpoint_sha256": loaded.sha256}
    digest = save_checkpoint(
        target, model, arch=loaded.arch, postprocess=loaded.postprocess, metadata=metadata
    )
    size_mb = target.stat().st_size / 2**20
    print(f"wrote {target} ({size_mb:.1f} MiB), sha256 {digest}")
    print("registry entry (smearscan/registry.py, SHIPPED):")
    print(f'    "{args.name}": ("{target.name}", "{digest}", "{args.description}"),')


if __name__ == "__main__":
    main()
