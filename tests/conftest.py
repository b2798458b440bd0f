"""Shared test fixtures: where the public measurements live (../shared beside the checkout)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEASURED = SHARED / "data" / "measured"


@pytest.fixture
def measured_dir() -> Path:
    if not MEASURED.is_dir():
        pytest.skip(f"public measurements not found at {MEASURED}")
    return MEASURED
