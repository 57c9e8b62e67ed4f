"""Tiny annotated datasets written by the tests: drawn cells with exact masks and boxes.

Every image holds one WBC (a light blue cytoplasm disc around a dark purple
nucleus) and a few pink RBC discs on a pale background, drawn at
:data:`PIXEL_SIZE_UM` with the sizes of DESIGN.md (RBC 7.5 µm, WBC 12 µm).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PIXEL_SIZE_UM = 0.25
RBC_RADIUS_PX = 15  # 7.5 µm across at 0.25 µm/px
WBC_RADIUS_PX = 24  # 12 µm
NUCLEUS_RADIUS_PX = 14


def draw_field(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray, list]:
    """One field: RGB uint8 ``(size, size, 3)``, mask uint8 (0/128/255), YOLO rows."""
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = (232, 222, 205)
    mask = np.zeros((size, size), np.uint8)
    rows = []
    for _ in range(3):
        cx, cy = (int(v) for v in rng.integers(RBC_RADIUS_PX, size - RBC_RADIUS_PX, 2))
        cv2.circle(rgb, (cx, cy), RBC_RADIUS_PX, (214, 140, 150), -1)
        d = 2 * RBC_RADIUS_PX / size
        rows.append((1, cx / size, cy / size, d, d))
    cx, cy = (int(v) for v in rng.integers(WBC_RADIUS_PX, size - WBC_RADIUS_PX, 2))
    cv2.circle(rgb, (cx, cy), WBC_RADIUS_PX, (170, 180, 215), -1)
    cv2.circle(mask, (cx, cy), WBC_RADIUS_PX, 128, -1)
    nx, ny = cx + int(rng.integers(-4, 5)), cy + int(rng.integers(-4, 5))
    cv2.circle(rgb, (nx, ny), NUCLEUS_RADIUS_PX, (95, 50, 140), -1)
    cv2.circle(mask, (nx, ny), NUCLEUS_RADIUS_PX, 255, -1)
    d = 2 * WBC_RADIUS_PX / size
    rows.append((0, cx / size, cy / size, d, d))
    noise = rng.normal(0, 3, rgb.shape)
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    return rgb, mask, rows


def _write(folder: Path, n: int, seed: int, size: int, labels: str) -> Path:
    """``n`` drawn fields as ``images/NNN.png`` plus their masks or YOLO files."""
    rng = np.random.default_rng(seed)
    for sub in ("images", labels):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb, mask, rows = draw_field(rng, size)
        cv2.imwrite(str(folder / "images" / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if labels == "masks":
            cv2.imwrite(str(folder / "masks" / f"{i:03d}.png"), mask)
        else:
            text = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)
            (folder / "labels" / f"{i:03d}.txt").write_text(text)
    return folder


def write_mask_dataset(folder: Path, n: int, seed: int = 0, size: int = 128) -> Path:
    """``folder/images/NNN.png`` + ``folder/masks/NNN.png`` (0 / 128 / 255)."""
    return _write(folder, n, seed, size, "masks")


def write_yolo_dataset(folder: Path, n: int, seed: int = 0, size: int = 128) -> Path:
    """``folder/images/NNN.png`` + ``folder/labels/NNN.txt`` (0 WBC, 1 RBC)."""
    return _write(folder, n, seed, size, "labels")
