"""Stain and optics style of one synthetic field.

A Romanowsky stain is a mix of eosin (pink/orange: red cells, eosinophil
granules) and azure/methylene blue (blue/purple: nuclei, basophilic
cytoplasm, platelets). Labs differ in the balance and strength of the two dyes
and in the colour of the light, so every synthetic field gets its own
:class:`StainStyle`. Colours are given as the RGB appearance (0-255) of a fully
stained structure seen against the background; the renderer converts them to
optical densities (Beer-Lambert) so overlapping structures darken naturally.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from smearscan.errors import ConfigError

RGB = tuple[float, float, float]

#: Style attributes that are colours (RGB, 0-255).
COLOUR_FIELDS: tuple[str, ...] = (
    "background",
    "rbc",
    "platelet",
    "nucleus",
    "neutrophil_cytoplasm",
    "lymphocyte_cytoplasm",
    "monocyte_cytoplasm",
    "eosinophil_cytoplasm",
    "basophil_cytoplasm",
    "eosinophil_granules",
    "basophil_granules",
)

#: Colours dominated by eosin; the others are dominated by the azure dye.
_EOSIN_FIELDS: frozenset[str] = frozenset({"rbc", "eosinophil_granules", "eosinophil_cytoplasm"})


@dataclass(frozen=True)
class StainStyle:
    """Colours, illumination and optics of one synthetic field.

    Attributes:
        background: Light seen through empty glass and plasma, RGB 0-255.
        rbc: Red cell rim (thickest part), RGB 0-255.
        platelet: Platelet granulomere, RGB 0-255.
        nucleus: WBC nucleus at unit density, RGB 0-255.
        neutrophil_cytoplasm: Pale lilac neutrophil cytoplasm, RGB 0-255.
        lymphocyte_cytoplasm: Blue lymphocyte cytoplasm, RGB 0-255.
        monocyte_cytoplasm: Grey-blue monocyte cytoplasm, RGB 0-255.
        eosinophil_cytoplasm: Eosinophil cytoplasm between granules, RGB 0-255.
        basophil_cytoplasm: Basophil cytoplasm between granules, RGB 0-255.
        eosinophil_granules: Orange-red eosinophil granules, RGB 0-255.
        basophil_granules: Dark purple basophil granules, RGB 0-255.
        rbc_pallor: Fraction (0-1) of the rim density missing at the red-cell centre.
        vignetting: Relative brightness lost at the field corners (0-0.5).
        blur_sigma_um: Standard deviation of the gaussian optical blur, micrometres.
        noise_sigma: Sensor read noise, grey levels (0-255 scale).
        shot_noise: Shot-noise gain: variance added per grey level of signal.
    """

    background: RGB = (236.0, 228.0, 214.0)
    rbc: RGB = (214.0, 150.0, 160.0)
    platelet: RGB = (120.0, 70.0, 160.0)
    nucleus: RGB = (78.0, 36.0, 128.0)
    neutrophil_cytoplasm: RGB = (220.0, 196.0, 216.0)
    lymphocyte_cytoplasm: RGB = (170.0, 186.0, 222.0)
    monocyte_cytoplasm: RGB = (192.0, 186.0, 210.0)
    eosinophil_cytoplasm: RGB = (226.0, 196.0, 196.0)
    basophil_cytoplasm: RGB = (208.0, 184.0, 212.0)
    eosinophil_granules: RGB = (222.0, 112.0, 72.0)
    basophil_granules: RGB = (56.0, 22.0, 84.0)
    rbc_pallor: float = 0.55
    vignetting: float = 0.12
    blur_sigma_um: float = 0.1
    noise_sigma: float = 1.5
    shot_noise: float = 0.02

    def __post_init__(self) -> None:
        """Check every value; raises :class:`ConfigError` on an implausible one."""
        for name in COLOUR_FIELDS:
            value = getattr(self, name)
            if len(value) != 3 or not all(0.0 < float(c) <= 255.0 for c in value):
                raise ConfigError(
                    f"StainStyle.{name} must be 3 RGB values in (0, 255], got {value}"
                )
        if not 0.0 <= self.rbc_pallor < 1.0:
            raise ConfigError(f"StainStyle.rbc_pallor must be in [0, 1), got {self.rbc_pallor}")
        if not 0.0 <= self.vignetting <= 0.5:
            raise ConfigError(f"StainStyle.vignetting must be in [0, 0.5], got {self.vignetting}")
        if self.blur_sigma_um < 0 or self.noise_sigma < 0 or self.shot_noise < 0:
            raise ConfigError("StainStyle blur_sigma_um, noise_sigma and shot_noise must be >= 0")

    def optical_density(self, name: str) -> np.ndarray:
        """Optical density of a colour against the background.

        Args:
            name: One of :data:`COLOUR_FIELDS` except ``background``.

        Returns:
            float32 array ``(3,)``: ``-ln(colour / background)`` per RGB channel,
            clipped at 0 (a stain never brightens the field).
        """
        colour = np.asarray(getattr(self, name), dtype=np.float64)
        background = np.asarray(self.background, dtype=np.float64)
        return np.clip(-np.log(colour / background), 0.0, None).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainStyle:
        """Rebuild a style written by :meth:`to_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {
            k: tuple(float(c) for c in v) if isinstance(v, list) else v
            for k, v in data.items()
            if k in known
        }
        return cls(**kwargs)

    @classmethod
    def random(cls, rng: np.random.Generator) -> StainStyle:
        """A random but plausible style around the default one.

        Varies the eosin and azure strengths independently (0.7-1.35x optical
        density), shifts hues by a few degrees, tints the background (cream to
        grey-blue) and varies vignetting, blur and noise.

        Args:
            rng: Source of randomness (the field's generator).

        Returns:
            A new style.
        """
        base = cls()
        tint = rng.uniform(-1.0, 1.0)  # -1 cool grey-blue light, +1 warm cream light
        brightness = rng.uniform(205.0, 248.0)
        background = (
            brightness * (1.0 + 0.015 * tint),
            brightness * (0.985 + 0.005 * tint),
            brightness * (0.97 - 0.05 * tint),
        )
        eosin = rng.uniform(0.7, 1.35)
        azure = rng.uniform(0.7, 1.35)
        hue_shift = rng.uniform(-0.03, 0.03)
        colours: dict[str, Any] = {"background": _clip_rgb(background)}
        for name in COLOUR_FIELDS[1:]:
            strength = eosin if name in _EOSIN_FIELDS else azure
            od = base.optical_density(name) * strength * rng.uniform(0.92, 1.08)
            rgb = np.asarray(background) * np.exp(-od)
            colours[name] = _shift_hue(rgb, hue_shift + rng.uniform(-0.01, 0.01))
        return replace(
            base,
            **colours,
            rbc_pallor=float(rng.uniform(0.35, 0.7)),
            vignetting=float(rng.uniform(0.03, 0.2)),
            blur_sigma_um=float(rng.uniform(0.07, 0.14)),
            noise_sigma=float(rng.uniform(0.8, 2.5)),
        )


def _clip_rgb(rgb: tuple[float, float, float] | np.ndarray) -> RGB:
    """Clip to the valid colour range and round to 0.1 for readable JSON."""
    r, g, b = (float(np.clip(round(float(c), 1), 1.0, 255.0)) for c in rgb)
    return (r, g, b)


def _shift_hue(rgb: np.ndarray, shift: float) -> RGB:
    """Rotate the hue of an RGB colour (0-255) by ``shift`` turns."""
    h, s, v = colorsys.rgb_to_hsv(*(np.clip(rgb, 0.0, 255.0) / 255.0))
    r, g, b = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
    return _clip_rgb((r * 255.0, g * 255.0, b * 255.0))
