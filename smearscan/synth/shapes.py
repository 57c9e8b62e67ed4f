"""Small geometry helpers shared by the synthetic renderers.

Coordinates follow OpenCV: ``x`` is the column, ``y`` the row, and the centre
of pixel ``(row, col)`` is the point ``(col, row)``. Polygons are filled with
4 bits of sub-pixel precision so that shapes do not snap to the pixel grid.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Sub-pixel bits used with OpenCV's ``shift`` argument.
SHIFT_BITS = 4
_SCALE = float(1 << SHIFT_BITS)


def star_radii(
    rng: np.random.Generator,
    n_angles: int,
    wobble: float,
    ellipticity: float,
    n_harmonics: int = 4,
) -> np.ndarray:
    """Relative radial profile of a smooth, slightly irregular round outline.

    Args:
        rng: Random generator.
        n_angles: Number of equally spaced angles sampled on ``[0, 2*pi)``.
        wobble: Amplitude of the irregular harmonics (relative to the radius).
        ellipticity: Amplitude of the elliptic (2nd) harmonic.
        n_harmonics: Number of irregular harmonics (orders 3, 4, ...).

    Returns:
        float64 array ``(n_angles,)`` of radius factors around 1.0.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, n_angles, endpoint=False)
    radii = 1.0 + ellipticity * np.cos(2.0 * (theta - rng.uniform(0.0, np.pi)))
    for order in range(3, 3 + n_harmonics):
        amp = wobble * rng.uniform(0.3, 1.0) / (order - 2)
        radii += amp * np.cos(order * theta + rng.uniform(0.0, 2.0 * np.pi))
    return radii


def radius_along(radii: np.ndarray, angle: float) -> float:
    """Radius of a star-shaped outline in one direction (linear interpolation).

    Args:
        radii: float array ``(n,)``: radii at angles ``2*pi*k/n`` (any unit).
        angle: Direction in radians (x towards columns, y towards rows).

    Returns:
        The interpolated radius, same unit as ``radii``.
    """
    n = radii.shape[0]
    pos = (angle % (2.0 * np.pi)) / (2.0 * np.pi) * n
    i0 = int(np.floor(pos)) % n
    frac = pos - np.floor(pos)
    return float(radii[i0] * (1.0 - frac) + radii[(i0 + 1) % n] * frac)


def star_points(cx: float, cy: float, radii: np.ndarray, rotation: float = 0.0) -> np.ndarray:
    """Vertices of a star-shaped polygon.

    Args:
        cx: Centre column, pixels.
        cy: Centre row, pixels.
        radii: float array ``(n,)``: radius (pixels) at angle ``2*pi*k/n + rotation``.
        rotation: Rotation of the profile, radians.

    Returns:
        float64 array ``(n, 2)`` of ``(x, y)`` vertices in pixels.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, radii.shape[0], endpoint=False) + rotation
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)


def ellipse_points(
    cx: float,
    cy: float,
    a: float,
    b: float,
    angle: float,
    wobble: np.ndarray | None = None,
    n: int = 64,
) -> np.ndarray:
    """Vertices of a rotated (optionally wobbly) ellipse.

    Args:
        cx: Centre column, pixels.
        cy: Centre row, pixels.
        a: Semi-axis along ``angle``, pixels.
        b: Semi-axis across ``angle``, pixels.
        angle: Orientation of the ``a`` axis, radians.
        wobble: Optional float array ``(n,)`` of radius factors (see :func:`star_radii`).
        n: Number of vertices (ignored when ``wobble`` is given).

    Returns:
        float64 array ``(n, 2)`` of ``(x, y)`` vertices in pixels.
    """
    if wobble is not None:
        n = wobble.shape[0]
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    u = a * np.cos(t)
    v = b * np.sin(t)
    if wobble is not None:
        u = u * wobble
        v = v * wobble
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([cx + u * ca - v * sa, cy + u * sa + v * ca], axis=1)


def to_fixed(points: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Convert float ``(n, 2)`` vertices to OpenCV fixed point, offset by ``(dx, dy)``.

    Returns:
        int32 array ``(n, 1, 2)`` for ``cv2.fillPoly``/``cv2.polylines`` with
        ``shift=SHIFT_BITS``.
    """
    shifted = (points + np.array([dx, dy])) * _SCALE
    return np.round(shifted).astype(np.int32).reshape(-1, 1, 2)


def fill_polygon(mask: np.ndarray, points: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> None:
    """Fill a polygon into a uint8 mask in place (value 1).

    Args:
        mask: uint8 array ``(h, w)``, modified in place.
        points: float array ``(n, 2)`` of ``(x, y)`` vertices, pixels.
        dx: Column offset added to the vertices.
        dy: Row offset added to the vertices.
    """
    cv2.fillPoly(mask, [to_fixed(points, dx, dy)], 1, cv2.LINE_8, SHIFT_BITS)


def draw_polyline(
    mask: np.ndarray,
    points: np.ndarray,
    thickness: int,
    dx: float = 0.0,
    dy: float = 0.0,
) -> None:
    """Draw an open thick polyline (rounded ends) into a uint8 mask in place (value 1).

    Args:
        mask: uint8 array ``(h, w)``, modified in place.
        points: float array ``(n, 2)`` of ``(x, y)`` vertices, pixels.
        thickness: Line thickness, pixels (at least 1).
        dx: Column offset added to the vertices.
        dy: Row offset added to the vertices.
    """
    cv2.polylines(
        mask, [to_fixed(points, dx, dy)], False, 1, max(1, int(thickness)), cv2.LINE_8, SHIFT_BITS
    )


def draw_discs(
    mask: np.ndarray, discs: np.ndarray, dx: float = 0.0, dy: float = 0.0, value: float = 1.0
) -> None:
    """Draw filled discs into a mask in place.

    Args:
        mask: uint8 or float32 array ``(h, w)``, modified in place.
        discs: float array ``(n, 3)``: ``x``, ``y``, ``radius`` in pixels.
        dx: Column offset added to the centres.
        dy: Row offset added to the centres.
        value: Value written inside the discs.
    """
    for x, y, r in discs:
        centre = (round((x + dx) * _SCALE), round((y + dy) * _SCALE))
        radius = max(1, round(r * _SCALE))
        cv2.circle(mask, centre, radius, value, -1, cv2.LINE_8, SHIFT_BITS)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean and unit variance.

    Args:
        rng: Random generator.
        shape: ``(h, w)`` of the output.
        sigma_px: Correlation length (gaussian sigma), pixels.

    Returns:
        float32 array ``(h, w)``.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px >= 0.3:
        blurred = cv2.GaussianBlur(noise, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
        noise = np.asarray(blurred, dtype=np.float32)
    std = float(noise.std())
    return (noise - float(noise.mean())) / (std if std > 0 else 1.0)
