"""One pixel size per camera: the RBC diameters of a camera's fields pooled into one value.

A lab's camera has a fixed pixel size, so the fields it took share one. Each
field alone gives a noisy estimate (:func:`smearscan.scale.rbc_diameters_px`:
a crowded field, a clump or a field with three red cells mislead it); the
fields of one camera together give a good one. :func:`pool_fields` takes the
RBC diameters (px) of each field of a camera and returns a
:class:`Calibration`:

* the fields with enough RBCs of their own (``min_rbcs``) are the pool; when
  none has, every field's RBCs are pooled, provided there are at least
  ``2 * min_rbcs`` of them from :data:`MIN_SPARSE_FIELDS` fields or more;
* the pooled diameter is the median of all the pool's diameters, each field
  weighted equally (every diameter of a field with ``n`` RBCs weighs ``1 /
  n``), so a crowded field does not outvote the others;
* fields whose own median lies more than ``tolerance`` from the pooled one are
  left out and the median taken again (once): they are the outliers, and get
  the camera's value with the flag ``SCALE_OUTLIER`` (:func:`field_outlier`);
* the 95 % interval comes from resampling the fields (the unit that is
  independent) :data:`BOOTSTRAP_SAMPLES` times with a fixed seed, so the same
  fields always give the same interval.

Pure numpy: the batch's pre-pass (:mod:`smearscan.scale_plan`) reads the
fields and the ledger (:mod:`smearscan.ledger_calibration`) keeps the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smearscan.errors import ScaleEstimationError

#: Fewest fields whose RBCs are pooled when none of them has enough of its own.
MIN_SPARSE_FIELDS = 3
#: Resamples of the fields for the confidence interval.
BOOTSTRAP_SAMPLES = 200
#: Seed of the resampling (the same fields give the same interval in every run).
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class FieldRbcs:
    """The RBCs one field gave.

    Attributes:
        name: The slide's name in the report.
        diameters_px: float64 ``(n,)`` RBC diameters in source pixels.
    """

    name: str
    diameters_px: np.ndarray

    @property
    def count(self) -> int:
        """Number of RBCs measured."""
        return int(self.diameters_px.size)

    def median_px(self) -> float:
        """Median RBC diameter in source pixels (NaN without RBCs)."""
        return float(np.median(self.diameters_px)) if self.count else float("nan")


@dataclass(frozen=True)
class Calibration:
    """One camera's pixel size, pooled over its fields.

    Attributes:
        signature: The camera signature (:func:`smearscan.cameras.camera_signature`).
        pixel_size_um: Pooled µm/px.
        ci_low_um: Lower end of the 95 % interval, µm/px.
        ci_high_um: Upper end, µm/px.
        fields: Fields pooled.
        rbcs: RBCs pooled.
        rbc_diameter_um: The RBC diameter taken as the ruler, µm.
        inputs: ``(slide name, RBCs, median diameter px)`` per pooled field.
        origin: ``"pooled"`` (this run) or ``"ledger"`` (a calibration stored earlier).
    """

    signature: str
    pixel_size_um: float
    ci_low_um: float
    ci_high_um: float
    fields: int
    rbcs: int
    rbc_diameter_um: float
    inputs: tuple[tuple[str, int, float], ...] = ()
    origin: str = "pooled"

    def summary(self) -> str:
        """One line for the log, the Run sheet and ``smearscan calibrate``."""
        return (
            f"{self.signature}: {self.pixel_size_um:.4g} µm/px "
            f"(95 % CI {self.ci_low_um:.4g}-{self.ci_high_um:.4g}; "
            f"{self.fields} fields, {self.rbcs} RBCs; {self.origin})"
        )

    def method(self) -> str:
        """How a slide calibrated by this camera got its pixel size (the Summary's words)."""
        where = "stored in the ledger" if self.origin == "ledger" else "pooled in this run"
        return (
            f"camera calibration ({where}): median RBC of {self.fields} fields "
            f"(n={self.rbcs}), 95 % CI {self.ci_low_um:.4g}-{self.ci_high_um:.4g} µm/px"
        )


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half the total weight lies (float64 ``(n,)`` inputs, n > 0)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _pooled_median(fields: Sequence[FieldRbcs]) -> float:
    """Median diameter (px) of the fields' RBCs, each field weighing the same."""
    values = np.concatenate([f.diameters_px for f in fields])
    weights = np.concatenate([np.full(f.count, 1.0 / f.count) for f in fields])
    return weighted_median(values, weights)


def _interval(fields: Sequence[FieldRbcs], median_px: float) -> tuple[float, float]:
    """95 % interval of the pooled median diameter (px), resampling fields (or the RBCs
    of a single field)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    if len(fields) == 1:
        d = fields[0].diameters_px
        meds = [float(np.median(rng.choice(d, d.size))) for _ in range(BOOTSTRAP_SAMPLES)]
    else:
        picks = rng.integers(0, len(fields), (BOOTSTRAP_SAMPLES, len(fields)))
        meds = [_pooled_median([fields[i] for i in pick]) for pick in picks]
    low, high = np.percentile(meds, [2.5, 97.5])
    return float(min(low, median_px)), float(max(high, median_px))


def _pool(fields: Sequence[FieldRbcs], min_rbcs: int) -> list[FieldRbcs]:
    """The fields whose RBCs are pooled (see the module); empty when too few."""
    own = [f for f in fields if f.count >= min_rbcs]
    if own:
        return own
    sparse = [f for f in fields if f.count > 0]
    if len(sparse) >= MIN_SPARSE_FIELDS and sum(f.count for f in sparse) >= 2 * min_rbcs:
        return sparse
    return []


def pool_fields(
    signature: str,
    fields: Sequence[FieldRbcs],
    *,
    rbc_diameter_um: float = 7.5,
    min_rbcs: int = 5,
    tolerance: float = 0.15,
) -> Calibration:
    """One pixel size for the fields of one camera (see the module).

    Args:
        signature: The camera's signature.
        fields: Every field of the camera measured in this run.
        rbc_diameter_um: The ruler: median RBC diameter, µm.
        min_rbcs: RBCs a field needs for an estimate of its own.
        tolerance: Relative distance from the pooled median beyond which a field's
            own median is an outlier, left out of the pool.

    Raises:
        ScaleEstimationError: Too few RBCs in all the fields together.
    """
    pool = _pool(fields, min_rbcs)
    if not pool:
        total = sum(f.count for f in fields)
        raise ScaleEstimationError(
            f"the {len(fields)} field(s) of camera '{signature}' hold {total} red cells of a "
            f"consistent size, too few to calibrate it; pass the pixel size explicitly "
            "(--pixel-size) or add a camera profile ([[scale.cameras]] in the config)"
        )
    median_px = _pooled_median(pool)
    kept = [f for f in pool if abs(f.median_px() / median_px - 1.0) <= tolerance]
    if kept and len(kept) < len(pool):
        pool, median_px = kept, _pooled_median(kept)
    low_px, high_px = _interval(pool, median_px)
    return Calibration(
        signature=signature,
        pixel_size_um=rbc_diameter_um / median_px,
        ci_low_um=rbc_diameter_um / high_px,
        ci_high_um=rbc_diameter_um / low_px,
        fields=len(pool),
        rbcs=sum(f.count for f in pool),
        rbc_diameter_um=rbc_diameter_um,
        inputs=tuple((f.name, f.count, round(f.median_px(), 3)) for f in pool),
    )


def field_outlier(
    field: FieldRbcs, calibration: Calibration, *, min_rbcs: int = 5, tolerance: float = 0.15
) -> str | None:
    """Why a field's own estimate is out of line with its camera's value, or None.

    A field with fewer than ``min_rbcs`` RBCs has no estimate of its own and is
    never an outlier; it simply takes the camera's value.
    """
    if field.count < min_rbcs:
        return None
    own_um = calibration.rbc_diameter_um / field.median_px()
    off = own_um / calibration.pixel_size_um - 1.0
    if abs(off) <= tolerance:
        return None
    return (
        f"SCALE_OUTLIER: the field's own estimate {own_um:.4g} µm/px (n={field.count}) is "
        f"{abs(off):.0%} {'above' if off > 0 else 'below'} its camera's "
        f"{calibration.pixel_size_um:.4g} µm/px, which it keeps"
    )
