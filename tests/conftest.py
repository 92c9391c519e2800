"""Test configuration: the data home points at ../shared/data when it exists; seeded RNGs; JAX on float64."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "OPTKIT_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["OPTKIT_DATA"] = str(_SHARED_DATA)
# Tests compare against float64 references; JAX defaults to float32 unless told otherwise.
os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)
