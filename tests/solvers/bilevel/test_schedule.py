"""Penalty schedules reach and hold their final value from either direction."""

import pytest

from optkit.solvers.bilevel._common import schedule


@pytest.mark.parametrize("kind,rate", [("geometric", 0.5), ("geometric", 2.0), ("polynomial", 0.5), ("linear", 10)])
def test_equal_start_and_final_is_constant(kind: str, rate: float) -> None:
    assert all(schedule(1e-4, 1e-4, k, kind=kind, rate=rate) == 1e-4 for k in range(50))


def test_geometric_decrease_stops_at_final() -> None:
    values = [schedule(1.0, 1e-3, k, rate=0.5) for k in range(30)]
    assert values[0] == 1.0 and values[-1] == 1e-3 and min(values) == 1e-3


def test_polynomial_growth_stops_at_final() -> None:
    values = [schedule(1.0, 10.0, k, kind="polynomial", rate=0.5) for k in range(200)]
    assert values[-1] == 10.0 and max(values) == 10.0 and values == sorted(values)
