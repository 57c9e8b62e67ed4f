"""Shared test fixtures.

Real reference data lives in ``../shared/data`` beside the repository (see
its README). Tests that need it use the ``shared_data`` fixture and are
skipped with a clear reason where it is absent; CI has it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA
