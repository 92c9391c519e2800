"""Contract tests over the whole registry: every registered solver on the example problem it registered.

A solver registered without ``example=`` fails here, so the contract cannot silently skip new methods.
"""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.solvers import registry
from optkit.solvers.loop import IterationState


def _canned(name: str):
    info = registry.get(name)
    if info.example is None:
        pytest.fail(f"registered solver {name!r} has no example problem: pass example= to register()")
    problem = info.example()
    reason = info.refusal(problem)
    if reason is not None:  # an optional dependency is missing on this machine (e.g. cyipopt for "ipopt")
        pytest.skip(reason)
    return problem


@pytest.mark.parametrize("name", optkit.available())
def test_solver_converges_and_reports(name: str) -> None:
    problem = _canned(name)
    result = optkit.solve(problem, name)
    assert result.status is optkit.Status.CONVERGED, result.message
    assert result.success
    assert result.method == name
    assert result.backend in registry.get(name).backends
    assert result.nit >= 1 and result.history.n_records >= 1
    assert "time" in result.history and "nit" in result.history
    for key, value in result.residuals.items():
        assert np.isfinite(value), key
        assert key in result.history, f"residual {key} is not recorded in the history"
    assert np.isfinite(result.fun)


@pytest.mark.parametrize("name", optkit.available())
def test_callback_can_stop(name: str) -> None:
    if not registry.get(name).iterative:
        pytest.skip("direct solver: no iterations for a callback to stop")
    problem = _canned(name)
    seen: list[IterationState] = []

    def stop_at_second(state: IterationState) -> bool:
        seen.append(state)
        return len(seen) >= 2

    result = optkit.solve(problem, name, callback=stop_at_second, **_strict(name))
    assert result.status is optkit.Status.CALLBACK_STOP
    assert len(seen) == 2 and seen[-1].x is not None

    def raise_stop(state: IterationState) -> None:
        raise StopIteration

    assert optkit.solve(problem, name, callback=raise_stop, **_strict(name)).status is optkit.Status.CALLBACK_STOP


def _strict(name: str) -> dict:
    """Options that keep a solver iterating long enough for a callback to stop it."""
    options = registry.get(name).options
    return {"tol": 1e-300} if "tol" in options else {}


@pytest.mark.parametrize("name", optkit.available())
def test_unknown_option_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError, match="valid options are"):
        optkit.solve(_canned(name), name, not_an_option=1)


@pytest.mark.parametrize("name", optkit.available())
def test_max_iter_status(name: str) -> None:
    if "max_iter" not in registry.get(name).options:
        pytest.skip("no max_iter option")
    result = optkit.solve(_canned(name), name, max_iter=1, **_strict(name))
    assert result.status is optkit.Status.MAX_ITER
    assert not result.success and "max_iter" in result.message


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="registered methods"):
        optkit.solve(_canned("sinkhorn"), "no-such-method")


def test_default_method_for_entropic_ot_is_sinkhorn() -> None:
    assert optkit.solve(_canned("sinkhorn")).method == "sinkhorn"
