"""Red cells, platelets and the optics of the synthetic smear.

Red cells are placed by random sequential adsorption with a slight overlap
allowed (a monolayer reading zone, 35-55 % covered), platelets in the gaps
between them. Both are rendered as optical densities into a field-wide array,
which :func:`apply_optics` turns into a camera image: Beer-Lambert absorption
of an unevenly lit background, gaussian optical blur and sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor

import cv2
import numpy as np
from scipy.spatial import cKDTree

from smearscan.synth.shapes import fill_polygon, smooth_noise, star_points, star_radii
from smearscan.synth.stain import StainStyle

#: RBC diameter range (µm) of DESIGN.md; equivalent-circle diameters are drawn inside it.
RBC_DIAMETER_UM: tuple[float, float] = (7.0, 8.0)
#: Platelet diameter range (µm) of DESIGN.md.
PLATELET_DIAMETER_UM: tuple[float, float] = (2.0, 3.0)
#: Smallest allowed centre distance of two RBCs, as a fraction of the sum of their radii.
_RBC_MIN_OVERLAP_FACTOR = 0.84


@dataclass
class Ellipses:
    """Placed elliptic objects (red cells), sorted by row then column.

    Attributes:
        x: float64 ``(n,)`` centre columns, pixels.
        y: float64 ``(n,)`` centre rows, pixels.
        a: float64 ``(n,)`` major semi-axes, pixels.
        b: float64 ``(n,)`` minor semi-axes, pixels.
        angle: float64 ``(n,)`` orientation of the major axis, radians.
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray

    def __len__(self) -> int:
        """Number of objects."""
        return int(self.x.shape[0])


def _sorted_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices sorting points by row (``y``) then column (``x``)."""
    return np.lexsort((x, y))


def _clear_of_blockers(points: np.ndarray, radii: np.ndarray, blockers: np.ndarray) -> np.ndarray:
    """bool ``(m,)``: whether discs ``points`` (m, 2) of ``radii`` (m,) miss every blocker disc."""
    if blockers.shape[0] == 0:
        return np.ones(points.shape[0], dtype=bool)
    d = np.hypot(
        points[:, None, 0] - blockers[None, :, 0], points[:, None, 1] - blockers[None, :, 1]
    )
    return np.asarray((d >= radii[:, None] + blockers[None, :, 2]).all(axis=1), dtype=bool)


def place_rbcs(
    rng: np.random.Generator, width: int, height: int, pixel_size_um: float, blockers: np.ndarray
) -> Ellipses:
    """Place red cells over the field, partly hidden under blockers at most.

    Args:
        rng: Random generator.
        width: Field width, pixels.
        height: Field height, pixels.
        pixel_size_um: Pixel size, micrometres per pixel.
        blockers: float64 ``(k, 3)``: ``x, y, r`` (pixels) of discs (WBCs) an RBC
            centre must stay ``r + 0.7 * rbc_radius`` away from.

    Returns:
        The red cells, sorted by centre row then column. Centres may lie up to
        one radius outside the image (cells cut by the field edge).
    """
    r_lo, r_hi = (d / 2.0 / pixel_size_um for d in RBC_DIAMETER_UM)
    r_lo, r_hi = r_lo + 0.05 * (r_hi - r_lo), r_hi - 0.05 * (r_hi - r_lo)
    r_mean = 0.5 * (r_lo + r_hi)
    coverage = rng.uniform(0.38, 0.55)
    area = (width + 2 * r_mean) * (height + 2 * r_mean)
    target = int(coverage * area / (np.pi * r_mean**2))
    cell = 2.0 * r_hi
    grid: dict[tuple[int, int], list[int]] = {}
    xs: list[float] = []
    ys: list[float] = []
    rs: list[float] = []
    batch = max(256, target)
    for _ in range(8):
        if len(xs) >= target:
            break
        cand = np.stack(
            [
                rng.uniform(-r_mean, width + r_mean, batch),
                rng.uniform(-r_mean, height + r_mean, batch),
            ],
            axis=1,
        )
        radii = rng.uniform(r_lo, r_hi, batch)
        factor = rng.uniform(_RBC_MIN_OVERLAP_FACTOR, 1.0, batch)
        ok = _clear_of_blockers(cand, 0.7 * radii, blockers)
        for (x, y), r, f, good in zip(cand, radii, factor, ok, strict=True):
            if good and len(xs) < target and _rbc_fits(x, y, r, f, grid, cell, xs, ys, rs):
                key = (int(x // cell), int(y // cell))
                grid.setdefault(key, []).append(len(xs))
                xs.append(float(x))
                ys.append(float(y))
                rs.append(float(r))
    x, y, r = np.array(xs), np.array(ys), np.array(rs)
    order = _sorted_order(x, y)
    q = rng.uniform(0.86, 1.0, len(xs))
    angle = rng.uniform(0.0, np.pi, len(xs))
    return Ellipses(x[order], y[order], r[order] / np.sqrt(q), r[order] * np.sqrt(q), angle)


def _rbc_fits(
    x: float,
    y: float,
    r: float,
    factor: float,
    grid: dict[tuple[int, int], list[int]],
    cell: float,
    xs: list[float],
    ys: list[float],
    rs: list[float],
) -> bool:
    """Whether a new RBC overlaps its accepted neighbours only slightly."""
    gx, gy = int(x // cell), int(y // cell)
    for kx in (gx - 1, gx, gx + 1):
        for ky in (gy - 1, gy, gy + 1):
            for j in grid.get((kx, ky), ()):
                if (xs[j] - x) ** 2 + (ys[j] - y) ** 2 < (factor * (r + rs[j])) ** 2:
                    return False
    return True


def render_rbcs(
    rbcs: Ellipses,
    style: StainStyle,
    rng: np.random.Generator,
    od: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Add red cells to the optical density and write their truth (later cells on top).

    Args:
        rbcs: Placed red cells; cell ``i`` gets label ``i + 1``.
        style: Stain style.
        rng: Random generator (per-cell density and pallor).
        od: float32 ``(H, W, 3)`` optical density, added to in place.
        labels: int32 ``(H, W)`` RBC instance map, written in place.
    """
    height, width = labels.shape
    rbc_od = style.optical_density("rbc")
    density_scale = rng.uniform(0.9, 1.1, len(rbcs))
    pallor = np.clip(style.rbc_pallor + rng.normal(0.0, 0.08, len(rbcs)), 0.0, 0.9)
    for i in range(len(rbcs)):
        cx, cy, a, b, ang = rbcs.x[i], rbcs.y[i], rbcs.a[i], rbcs.b[i], rbcs.angle[i]
        x0, x1 = max(0, floor(cx - a) - 1), min(width, ceil(cx + a) + 2)
        y0, y1 = max(0, floor(cy - a) - 1), min(height, ceil(cy + a) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
        gy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
        u = gx * np.cos(ang) + gy * np.sin(ang)
        v = -gx * np.sin(ang) + gy * np.cos(ang)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = rho <= 1.0
        if not inside.any():
            continue
        density = (1.0 - pallor[i] * np.exp(-((rho / 0.5) ** 4))) * (
            1.0 + 0.15 * np.exp(-(((rho - 0.85) / 0.12) ** 2))
        )
        density = (density * inside * density_scale[i]).astype(np.float32)
        od[y0:y1, x0:x1] += density[..., None] * rbc_od
        labels[y0:y1, x0:x1][inside] = i + 1


def place_platelets(
    rng: np.random.Generator,
    width: int,
    height: int,
    pixel_size_um: float,
    rbcs: Ellipses,
    blockers: np.ndarray,
) -> np.ndarray:
    """Place platelets in the gaps between red cells and WBCs, fully inside the field.

    Args:
        rng: Random generator.
        width: Field width, pixels.
        height: Field height, pixels.
        pixel_size_um: Pixel size, micrometres per pixel.
        rbcs: Placed red cells (platelets do not overlap them).
        blockers: float64 ``(k, 3)`` WBC discs ``x, y, r`` (pixels) to keep clear of.

    Returns:
        float64 ``(n, 3)``: platelet ``x, y, radius`` in pixels, sorted by row then column.
    """
    r_lo, r_hi = (d / 2.0 / pixel_size_um for d in PLATELET_DIAMETER_UM)
    r_lo, r_hi = r_lo * 1.04, r_hi * 0.9
    target = max(1, round(len(rbcs) / rng.uniform(12.0, 25.0)))
    n_cand = 40 * target
    radii = rng.uniform(r_lo, r_hi, n_cand)
    margin = 1.3 * r_hi + 3.0
    pts = np.stack(
        [rng.uniform(margin, width - margin, n_cand), rng.uniform(margin, height - margin, n_cand)],
        axis=1,
    )
    ok = _clear_of_blockers(pts, 1.3 * radii + 2.0, blockers)
    if len(rbcs):
        tree = cKDTree(np.stack([rbcs.x, rbcs.y], axis=1))
        dist, idx = tree.query(pts, k=min(6, len(rbcs)))
        dist, idx = dist.reshape(n_cand, -1), idx.reshape(n_cand, -1)
        ok &= (dist >= rbcs.a[idx] + 1.3 * radii[:, None] + 1.0).all(axis=1)
    chosen: list[int] = []
    for i in np.flatnonzero(ok):
        if len(chosen) >= target:
            break
        if all(np.hypot(*(pts[i] - pts[j])) >= 1.3 * (radii[i] + radii[j]) + 2 for j in chosen):
            chosen.append(int(i))
    out = np.column_stack([pts[chosen], radii[chosen]]).reshape(-1, 3)
    return out[_sorted_order(out[:, 0], out[:, 1])]


def render_platelets(
    platelets: np.ndarray,
    style: StainStyle,
    rng: np.random.Generator,
    pixel_size_um: float,
    od: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Add platelets to the optical density and write their truth.

    Args:
        platelets: float64 ``(n, 3)`` ``x, y, radius`` (pixels); platelet ``i`` gets
            label ``i + 1``.
        style: Stain style.
        rng: Random generator (outline and granularity).
        pixel_size_um: Pixel size, micrometres per pixel.
        od: float32 ``(H, W, 3)`` optical density, added to in place.
        labels: int32 ``(H, W)`` platelet instance map, written in place.
    """
    plt_od = style.optical_density("platelet")
    for i, (cx, cy, r) in enumerate(platelets):
        radii = r * star_radii(rng, 32, wobble=0.08, ellipticity=rng.uniform(0.0, 0.08))
        rmax = float(radii.max())
        x0, y0 = floor(cx - rmax) - 2, floor(cy - rmax) - 2
        w, h = ceil(cx + rmax) + 3 - x0, ceil(cy + rmax) + 3 - y0
        mask = np.zeros((h, w), np.uint8)
        fill_polygon(mask, star_points(cx - x0, cy - y0, radii))
        gx = np.arange(w)[None, :] + x0 - cx
        gy = np.arange(h)[:, None] + y0 - cy
        core = np.exp(-((gx**2 + gy**2) / (0.6 * r) ** 2))
        grain = smooth_noise(rng, (h, w), 0.2 / pixel_size_um)
        density = (0.45 + 0.8 * core) * np.clip(1.0 + 0.3 * grain, 0.3, None) * (mask > 0)
        sl, local = clip_window(x0, y0, w, h, labels.shape)
        od[sl] += density.astype(np.float32)[local][..., None] * plt_od
        labels[sl][mask[local] > 0] = i + 1


def clip_window(
    x0: int, y0: int, w: int, h: int, shape: tuple[int, ...]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Intersect a window with an image.

    Args:
        x0: First column of the window (may be negative).
        y0: First row of the window (may be negative).
        w: Window width, pixels.
        h: Window height, pixels.
        shape: Image shape ``(H, W, ...)``.

    Returns:
        ``(image_slices, window_slices)``: row and column slices of the
        overlap in image and in window coordinates (possibly empty).
    """
    ix0, iy0 = max(0, x0), max(0, y0)
    ix1, iy1 = max(ix0, min(shape[1], x0 + w)), max(iy0, min(shape[0], y0 + h))
    image = (slice(iy0, iy1), slice(ix0, ix1))
    window = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    return image, window


def apply_optics(
    od: np.ndarray, style: StainStyle, rng: np.random.Generator, pixel_size_um: float
) -> np.ndarray:
    """Turn an optical-density field into a camera image (consumes ``od``).

    Beer-Lambert absorption of a background lit with vignetting and a gentle
    low-frequency unevenness, gaussian optical blur of ``style.blur_sigma_um``,
    then read and shot noise.

    Args:
        od: float32 ``(H, W, 3)`` optical density; overwritten (used as work space).
        style: Stain style (background colour, vignetting, blur, noise).
        rng: Random generator.
        pixel_size_um: Pixel size, micrometres per pixel.

    Returns:
        uint8 ``(H, W, 3)`` RGB image.
    """
    height, width = od.shape[:2]
    cx = width * (0.5 + rng.normal(0.0, 0.08))
    cy = height * (0.5 + rng.normal(0.0, 0.08))
    half_diag2 = (width**2 + height**2) / 4.0
    gx = ((np.arange(width, dtype=np.float32) - cx) ** 2)[None, :]
    gy = ((np.arange(height, dtype=np.float32) - cy) ** 2)[:, None]
    light = 1.0 - style.vignetting * np.minimum((gx + gy) / half_diag2, 2.0)
    uneven = rng.normal(0.0, 0.012, (4, 5)).astype(np.float32)
    light *= 1.0 + cv2.resize(uneven, (width, height), interpolation=cv2.INTER_CUBIC)
    np.negative(od, out=od)
    np.exp(od, out=od)
    od *= light[..., None]
    od *= np.asarray(style.background, dtype=np.float32)
    sigma_px = style.blur_sigma_um / pixel_size_um
    if sigma_px >= 0.25:
        od = cv2.GaussianBlur(od, (0, 0), sigma_px, dst=od, borderType=cv2.BORDER_REFLECT)
    noise_sd = np.sqrt(style.noise_sigma**2 + style.shot_noise * np.maximum(od, 0.0))
    od += rng.standard_normal(od.shape, dtype=np.float32) * noise_sd
    np.clip(od, 0.0, 255.0, out=od)
    return np.rint(od).astype(np.uint8)
