"""Shared fixtures: the real data sets beside the repository (tests using them skip when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"


@pytest.fixture
def hc18_dir() -> Path:
    path = SHARED_DATA / "hc18"
    if not (path / "training_set_pixel_size_and_HC.csv").exists():
        pytest.skip("the HC18 data (../shared/data/hc18) is not available")
    return path


@pytest.fixture
def psfhs_dir() -> Path:
    path = SHARED_DATA / "psfhs"
    if not (path / "label_mha").is_dir():
        pytest.skip("the PSFHS data (../shared/data/psfhs) is not available")
    return path
