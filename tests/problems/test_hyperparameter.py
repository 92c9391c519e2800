"""Hyperparameter bilevel problems on LIBSVM data: hand-written derivatives against finite differences, splits,
feasibility of the SVM constraints at the start."""

from __future__ import annotations

import numpy as np
import pytest

from optkit.problems.library.hyperparameter import logreg_per_feature, svm_accuracy, svm_hyperparameter


def _data_or_skip(factory, *args, **kwargs):
    from optkit.data._errors import DataNotFoundError

    try:
        return factory(*args, **kwargs)
    except DataNotFoundError as error:  # pragma: no cover - depends on the machine
        pytest.skip(str(error).splitlines()[0])


def test_logreg_derivatives_match_finite_differences() -> None:
    h = _data_or_skip(logreg_per_feature, "a9a", max_train=500)
    p = h.problem
    n, m = p.dims
    assert (n, m) == (123, 123)
    rng = np.random.default_rng(0)
    x, z = 0.3 * rng.normal(size=n), 0.1 * rng.normal(size=m)
    vx, vz = rng.normal(size=n), rng.normal(size=m)
    eps = 1e-6
    for level in (p.lower, p.upper):
        gx, gz = level.grad(x, z)
        # directional derivatives (central differences, error O(eps^2) ~ 1e-12 times third derivatives)
        fd = (level.value(x + eps * vx, z + eps * vz) - level.value(x - eps * vx, z - eps * vz)) / (2 * eps)
        assert gx @ vx + gz @ vz == pytest.approx(fd, rel=1e-7, abs=1e-9)
        hx, hz = level.hvp(x, z, vx, vz)
        plus, minus = level.grad(x + eps * vx, z + eps * vz), level.grad(x - eps * vx, z - eps * vz)
        np.testing.assert_allclose(hx, (plus[0] - minus[0]) / (2 * eps), atol=1e-7)
        np.testing.assert_allclose(hz, (plus[1] - minus[1]) / (2 * eps), atol=1e-7)
    # minibatch oracles are means over the batch
    idx = np.arange(10)
    full = p.lower.batch_grad(x, z, idx)
    assert full[1].shape == (m,)


@pytest.mark.parametrize("name, variant", [("diabetes", "gam"), ("fourclass", "coupled")])
def test_svm_problem_is_feasible_at_the_start(name: str, variant: str) -> None:
    h = _data_or_skip(svm_hyperparameter, name, variant=variant)
    p = h.problem
    n, m = p.dims
    d = h.train[0].shape[1]
    assert n == 500 and m == d + 1 + 500
    assert h.validation[0].shape[0] == 150 and h.test[0].shape[0] > 0
    # the start (w, b, xi) = (0, 0, 1) satisfies the margin rows with equality, and 0 <= xi <= c when coupled
    assert p.constraint_violation(p.x0, p.y0) <= 1e-12
    assert 0.0 <= svm_accuracy(p.y0, h.test) <= 1.0
    gx, gy = p.upper.grad(p.x0, p.y0 + 0.01)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
    with pytest.raises(ValueError, match="variant"):
        svm_hyperparameter(name, variant="other")


@pytest.mark.parametrize("variant", ["gam", "coupled"])
def test_svm_reference_lower_solve_is_a_qp_matching_slsqp(variant: str) -> None:
    """The declared-quadratic reference solve (CVXPY/Clarabel) against SciPy's SLSQP on a small split; both stop
    at ~1e-10 (Clarabel gaps) / 1e-12 (SLSQP ftol) on objectives of size ~1, so values agree to 1e-6."""
    from scipy.optimize import minimize

    from optkit.solvers.bilevel._common import lower_minimum

    h = _data_or_skip(svm_hyperparameter, "diabetes", variant=variant, n_train=40, n_val=20)
    p = h.problem
    x = p.x0 + np.random.default_rng(0).uniform(-0.5, 0.5, p.dims[0])
    value, y = lower_minimum(p, x, p.y0)
    assert p.lower_constraints.violation(x, y) <= 1e-7
    A_x, A_y, b = p.lower_constraints.affine("inequality")
    ref = minimize(lambda v: (p.lower.value(x, v), p.lower.grad(x, v)[1]), p.y0, jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda v: b - A_x @ x - A_y @ v, "jac": lambda v: -A_y}],
                   options={"maxiter": 2000, "ftol": 1e-12})
    assert ref.success, ref.message
    assert value == pytest.approx(ref.fun, rel=1e-6, abs=1e-8)
