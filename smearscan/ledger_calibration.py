"""The run ledger's camera calibrations: one row per camera signature.

A nightly run over a growing folder must give a camera the same pixel size
every night, not one that drifts as fields are added: the first run that
pools a camera's fields (:func:`smearscan.calibration.pool_fields`) stores
the result here, with its inputs (the fields and their RBCs), and later runs
on the same ledger reuse it (``--force`` pools again and replaces it). A
slide calibrated from a camera is reproducible from this row.

The table lives beside the ledger's own (``CREATE TABLE IF NOT EXISTS``): an
older smearscan that does not know it leaves it alone, and the ledger's
schema version does not change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from smearscan.calibration import Calibration
from smearscan.ledger import Ledger

_TABLE = """CREATE TABLE IF NOT EXISTS calibrations (
    signature TEXT PRIMARY KEY, pixel_size_um REAL NOT NULL, ci_low_um REAL NOT NULL,
    ci_high_um REAL NOT NULL, fields INTEGER NOT NULL, rbcs INTEGER NOT NULL,
    rbc_diameter_um REAL NOT NULL, inputs_json TEXT NOT NULL, created_utc TEXT NOT NULL)"""


def _ensure_table(ledger: Ledger) -> None:
    with ledger._tx() as conn:  # the ledger's companion module: its transaction
        conn.execute(_TABLE)


def stored_calibration(ledger: Ledger, signature: str) -> Calibration | None:
    """The calibration stored for ``signature``, or None (origin ``"ledger"``)."""
    _ensure_table(ledger)
    rows = ledger._query(
        "SELECT pixel_size_um, ci_low_um, ci_high_um, fields, rbcs, rbc_diameter_um, "
        "inputs_json FROM calibrations WHERE signature = ?",
        (signature,),
    )
    if not rows:
        return None
    size, low, high, fields, rbcs, ruler, inputs = tuple(rows[0])
    return Calibration(
        signature=signature,
        pixel_size_um=float(size),
        ci_low_um=float(low),
        ci_high_um=float(high),
        fields=int(fields),
        rbcs=int(rbcs),
        rbc_diameter_um=float(ruler),
        inputs=tuple((str(n), int(c), float(m)) for n, c, m in json.loads(inputs)),
        origin="ledger",
    )


def store_calibration(ledger: Ledger, calibration: Calibration) -> None:
    """Store (or replace) the calibration of ``calibration.signature``."""
    _ensure_table(ledger)
    with ledger._tx() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO calibrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                calibration.signature,
                calibration.pixel_size_um,
                calibration.ci_low_um,
                calibration.ci_high_um,
                calibration.fields,
                calibration.rbcs,
                calibration.rbc_diameter_um,
                json.dumps([list(i) for i in calibration.inputs], ensure_ascii=False),
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )
