"""Log-domain Sinkhorn on every backend against POT, against each other, and its JAX derivatives.

Tolerances follow from the stopping rule: with an L1 marginal error below ``tol`` the plan is within ``tol`` of
the exact entropic plan entry-wise up to a factor of the conditioning of the Sinkhorn fixed point, which is O(1)
for the moderate epsilon used here (the comparisons run at ``tol = 1e-13`` and are asserted at ``1e-8`` or
``1e-10``).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import ot
import pytest

import optkit
from optkit import Entropic, Status, TransportProblem

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

BACKENDS = ["numpy", "numba", "jax"]
EPSILON = 0.05
N, M = 7, 9


def _data(seed: int = 0, zero: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(N, 2)), rng.normal(size=(M, 2)) + 0.3
    a, b = rng.random(N) + 0.2, rng.random(M) + 0.2
    if zero:
        a[1] = 0.0
        b[[0, 4]] = 0.0
    return x, y, a / a.sum(), b / b.sum()


def _problem(backend: str, seed: int = 0, epsilon: float = EPSILON, zero: bool = False,
             dtype: type = np.float64) -> TransportProblem:
    x, y, a, b = _data(seed, zero)
    numpy_problem = TransportProblem.from_points(x, y, a, b, normalize="max")
    cost, a, b = (np.asarray(v, dtype=dtype) for v in (numpy_problem.cost, a, b))
    b = b * (a.sum(dtype=np.float64) / b.sum(dtype=np.float64)).astype(dtype)
    if backend == "jax":
        cost, a, b = jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b)
    return TransportProblem(a, b, cost, Entropic(epsilon))


def _solve(problem: TransportProblem, backend: str, **options):
    return optkit.solve(problem, "sinkhorn", backend=backend, **options)


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@pytest.fixture(scope="module")
def pot_reference() -> dict:
    problem = _problem("numpy")
    plan, log = ot.sinkhorn(problem.a, problem.b, problem.cost, EPSILON, method="sinkhorn_log",
                            stopThr=1e-15, numItermax=100_000, log=True)
    return {"plan": plan, "f": EPSILON * log["log_u"], "g": EPSILON * log["log_v"]}


@pytest.fixture(scope="module")
def solved() -> dict:
    return {backend: _solve(_problem(backend), backend, tol=1e-13) for backend in BACKENDS}


# ------------------------------------------------------------------------------------------- against POT
@pytest.mark.parametrize("backend", BACKENDS)
def test_plan_and_potentials_match_pot_sinkhorn_log(backend: str, solved: dict, pot_reference: dict) -> None:
    result = solved[backend]
    assert result.status is Status.CONVERGED, result.message
    assert result.backend == backend
    np.testing.assert_allclose(_np(result.x.plan), pot_reference["plan"], rtol=0, atol=1e-8)
    f, g = (_np(p) for p in result.x.potentials)
    shift = f - pot_reference["f"]
    assert np.ptp(shift) < 1e-8  # f equals POT's up to one constant ...
    np.testing.assert_allclose(g, pot_reference["g"] - shift.mean(), rtol=0, atol=1e-8)  # ... g the opposite one
    assert result.residuals["marginal_error"] <= 1e-12


def test_backends_agree(solved: dict) -> None:
    reference = solved["numpy"]
    for backend in ("numba", "jax"):
        result = solved[backend]
        np.testing.assert_allclose(_np(result.x.plan), reference.x.plan, rtol=0, atol=1e-12)
        for mine, ref in zip(result.x.potentials, reference.x.potentials):  # same (balanced) gauge
            np.testing.assert_allclose(_np(mine), ref, rtol=0, atol=1e-10)
        assert float(result.fun) == pytest.approx(reference.fun, abs=1e-12)
    # The kernels are the same iteration: same number of updates for the NumPy and Numba backends.
    assert solved["numba"].nit == reference.nit


def test_cost_approaches_emd_as_epsilon_shrinks() -> None:
    """<C, P_eps> is non-decreasing in eps and exceeds OT by at most eps * min(H(a), H(b)) (Shannon entropies):
    from <C,P_eps> + eps R(P_eps) <= OT + eps R(P*) with R = sum P log P, R(P*) <= min(sum a log a, sum b log b)
    and R(P_eps) >= sum a log a + sum b log b."""
    base = _problem("numpy")
    a, b, cost = base.a, base.b, base.cost
    exact = ot.emd2(a, b, cost)
    bound = min(-np.sum(a * np.log(a)), -np.sum(b * np.log(b)))
    costs = []
    for epsilon in (0.1, 0.03, 0.01, 0.003):
        result = _solve(base.with_regularization(Entropic(epsilon)), "numba", tol=1e-12, max_iter=200_000)
        assert result.success, result.message
        costs.append(result.x.cost)
        slack = 1e-12 * cost.max()  # what the marginal error allows
        assert exact - slack <= result.x.cost <= exact + epsilon * bound + slack
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(costs))
    assert costs[-1] - exact < 0.1 * (costs[0] - exact)


# ---------------------------------------------------------------------------------------------- numba kernel
def test_numba_kernel_chunks_equal_numpy_reference() -> None:
    """Chunked calls (which resume the kernel's saved state) give the NumPy reference's iterates."""
    from optkit.kernels import numba_sinkhorn, numpy_sinkhorn

    problem = _problem("numpy", epsilon=0.01)
    args = (problem.cost, problem.a, problem.b)
    f, g = np.zeros(N), np.zeros(M)
    ref = numpy_sinkhorn.sinkhorn_log_chunk(*args, f, g, 0.01, 37, 1e-300)
    total = 0
    for budget in (10, 10, 10, 7):
        f, g, err, done = numba_sinkhorn.sinkhorn_log_chunk(*args, f, g, 0.01, budget, 1e-300)
        total += done
    assert total == ref[3] == 37
    np.testing.assert_allclose(f, ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(g, ref[1], rtol=0, atol=1e-12)
    assert err == pytest.approx(ref[2], rel=1e-8)
    # Early stop: the first update meeting tol ends the call, and the error returned is the iterate's.
    f, g, err, done = numba_sinkhorn.sinkhorn_log_chunk(*args, np.zeros(N), np.zeros(M), 0.01, 10_000, 1e-6)
    ref = numpy_sinkhorn.sinkhorn_log_chunk(*args, np.zeros(N), np.zeros(M), 0.01, 10_000, 1e-6)
    assert done == ref[3] and err <= 1e-6


def test_numba_converges_where_kernel_sinkhorn_underflows() -> None:
    """eps = 1e-4 on a max-normalised cost: exp(-C/eps) underflows (POT's kernel Sinkhorn breaks down), the
    absorbing kernel converges to an L1 error of 1e-6 and its cost is within eps * H of the exact OT cost."""
    rng = np.random.default_rng(3)
    x, y = rng.random((25, 2)), rng.random((30, 2))
    problem = TransportProblem.from_points(x, y, normalize="max", regularization=Entropic(1e-4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            pot_plan = ot.sinkhorn(problem.a, problem.b, problem.cost, 1e-4, numItermax=2000)
    pot_error = np.abs(pot_plan.sum(1) - problem.a).sum() + np.abs(pot_plan.sum(0) - problem.b).sum()
    assert not pot_error <= 1e-6  # NaN or far off
    result = _solve(problem, "numba", tol=1e-6, max_iter=1_000_000, check_every=1000)
    assert result.success, result.message
    assert result.residuals["marginal_error"] <= 1.1e-6
    exact = ot.emd2(problem.a, problem.b, problem.cost)
    assert exact - 1e-6 <= result.x.cost <= exact + 1e-4 * math.log(25) + 1e-6


# -------------------------------------------------------------------------------------------------- JAX
def _jax_objective(cost, a, b, epsilon=EPSILON, implicit=True):
    problem = TransportProblem(a, b, cost, Entropic(epsilon))
    return optkit.solve(problem, "sinkhorn", backend="jax", tol=1e-13, max_iter=500, implicit_diff=implicit).fun


# Compiled once, shared by the gradient tests (same shapes): JAX compilation dominates their cost.
_grad_implicit = jax.jit(jax.grad(_jax_objective, argnums=(0, 1, 2, 3)))
_grad_unrolled = jax.jit(jax.grad(lambda *p: _jax_objective(*p, implicit=False), argnums=(0, 1, 2, 3)))


def test_jax_under_jit_and_vmap(solved: dict) -> None:
    problem = _problem("jax")

    @jax.jit
    def run(cost, tol):
        return optkit.solve(TransportProblem(problem.a, problem.b, cost, Entropic(EPSILON)), "sinkhorn",
                            tol=tol)

    result = run(problem.cost, 1e-13)
    assert result.status.dtype == jnp.int32 and int(result.status) == Status.CONVERGED
    assert bool(result.success) and int(result.nit) > 0
    np.testing.assert_allclose(_np(result.x.plan), solved["numpy"].x.plan, rtol=0, atol=1e-12)
    assert int(run(problem.cost, 1e-300).status) == Status.MAX_ITER  # same compilation, traced tol

    rng = np.random.default_rng(1)
    costs = problem.cost[None] * (1.0 + 0.3 * jnp.asarray(rng.random((8, N, M))))
    batch = jax.vmap(lambda c: run(c, 1e-13))(costs)
    assert batch.x.plan.shape == (8, N, M) and batch.status.shape == (8,)
    assert np.all(np.asarray(batch.status) == Status.CONVERGED)
    for k in (0, 7):
        reference = _solve(TransportProblem(_np(problem.a), _np(problem.b), _np(costs[k]), Entropic(EPSILON)),
                           "numba", tol=1e-13)
        np.testing.assert_allclose(_np(batch.x.plan[k]), reference.x.plan, rtol=0, atol=1e-11)
        assert float(batch.fun[k]) == pytest.approx(reference.fun, abs=1e-12)


def _numba_objective(cost, a, b) -> float:
    problem = TransportProblem(_np(a), _np(b), _np(cost), Entropic(EPSILON))
    result = _solve(problem, "numba", tol=1e-14, max_iter=100_000)
    assert result.success, result.message
    return result.fun


def test_jax_gradients_match_finite_differences(solved: dict) -> None:
    """d objective / d (cost, a, b, points) against central differences of the converged objective (computed by
    the Numba backend); the marginal directions keep the two masses equal."""
    problem = _problem("jax")
    cost, a, b = problem.cost, problem.a, problem.b
    grad_cost, grad_a, grad_b, _ = _grad_implicit(cost, a, b, EPSILON)
    rng = np.random.default_rng(2)
    h = 1e-5
    direction_cost = rng.normal(size=(N, M))
    direction_a = rng.normal(size=N)
    direction_a -= direction_a.mean()
    direction_b = rng.normal(size=M)
    direction_b -= direction_b.mean()
    for da, db, dc, analytic in (
        (0, 0, direction_cost, np.sum(_np(grad_cost) * direction_cost)),
        (direction_a * 0.1, 0, 0, np.dot(_np(grad_a), direction_a * 0.1)),
        (0, direction_b * 0.1, 0, np.dot(_np(grad_b), direction_b * 0.1)),
        (0.1 * _np(a), 0.1 * _np(b), 0, np.dot(_np(grad_a), 0.1 * _np(a)) + np.dot(_np(grad_b), 0.1 * _np(b))),
    ):
        plus = _numba_objective(_np(cost) + h * dc, _np(a) + h * da, _np(b) + h * db)
        minus = _numba_objective(_np(cost) - h * dc, _np(a) - h * da, _np(b) - h * db)
        assert analytic == pytest.approx((plus - minus) / (2 * h), rel=1e-6, abs=1e-9)
    # The gradient with respect to the cost is the optimal plan (envelope theorem).
    np.testing.assert_allclose(_np(grad_cost), solved["numpy"].x.plan, atol=1e-10)

    # Point positions through TransportProblem.from_points (the max-normalisation is differentiated too).
    x, y, a_np, b_np = _data()

    def of_points(x):
        problem = TransportProblem.from_points(x, jnp.asarray(y), jnp.asarray(a_np), jnp.asarray(b_np),
                                               normalize="max", regularization=Entropic(EPSILON))
        return optkit.solve(problem, "sinkhorn", tol=1e-13, max_iter=500).fun

    grad_x = jax.jit(jax.grad(of_points))(jnp.asarray(x))
    direction_x = rng.normal(size=x.shape)

    def numba_points(x):
        p = TransportProblem.from_points(x, y, a_np, b_np, normalize="max")
        return _numba_objective(p.cost, a_np, b_np)

    fd = (numba_points(x + h * direction_x) - numba_points(x - h * direction_x)) / (2 * h)
    assert np.sum(_np(grad_x) * direction_x) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_implicit_and_unrolled_gradients_agree() -> None:
    """Equal on every direction that keeps the masses equal (the only ones the objective is defined on): the
    marginal gradients may differ by opposite constants (c on a, -c on b), which such directions do not see."""
    problem = _problem("jax")
    args = (problem.cost, problem.a, problem.b, EPSILON)
    implicit = [_np(g) for g in _grad_implicit(*args)]
    unrolled = [_np(g) for g in _grad_unrolled(*args)]
    np.testing.assert_allclose(implicit[0], unrolled[0], rtol=1e-7, atol=1e-10)  # cost
    for k in (1, 2):  # a, b up to a constant
        np.testing.assert_allclose(implicit[k] - implicit[k].mean(), unrolled[k] - unrolled[k].mean(), atol=1e-8)
    assert implicit[1].mean() + implicit[2].mean() == pytest.approx(unrolled[1].mean() + unrolled[2].mean(),
                                                                    abs=1e-8)
    assert implicit[3] == pytest.approx(unrolled[3], rel=1e-7)  # epsilon


# ----------------------------------------------------------------------------------------- zero weights
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_weights_give_minus_infinity_potentials(backend: str) -> None:
    result = _solve(_problem(backend, zero=True), backend, tol=1e-12)
    assert result.success, result.message
    f, g = (_np(p) for p in result.x.potentials)
    assert f[1] == -np.inf and g[0] == -np.inf and g[4] == -np.inf
    assert np.isfinite(np.delete(f, 1)).all() and np.isfinite(np.delete(g, [0, 4])).all()
    plan = _np(result.x.plan)
    assert not np.isnan(plan).any() and np.all(plan[1] == 0) and np.all(plan[:, [0, 4]] == 0)
    assert np.isfinite(float(result.fun))


def test_zero_weights_jax_gradients_are_not_nan() -> None:
    problem = _problem("jax", zero=True)
    for gradient in (_grad_implicit, _grad_unrolled):
        grads = gradient(problem.cost, problem.a, problem.b, EPSILON)
        for grad in grads:
            assert not np.isnan(_np(grad)).any()
        assert np.all(_np(grads[0])[1] == 0)  # no plan mass, no sensitivity to that row's costs


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda c, a, b: TransportProblem(-a, b, c, Entropic(0.1)), "a"),
        (lambda c, a, b: TransportProblem(a, np.where(np.arange(M) == 2, np.nan, b), c, Entropic(0.1)), "b"),
        (lambda c, a, b: TransportProblem(a, 2 * b, c, Entropic(0.1)), "same total mass"),
        (lambda c, a, b: TransportProblem(a[:-1], b, c, Entropic(0.1)), "a"),
        (lambda c, a, b: TransportProblem(a, b, c[:, :, None], Entropic(0.1)), "cost"),
        (lambda c, a, b: TransportProblem(a, b, np.where(c > 0.5, np.inf, c), Entropic(0.1)), "cost"),
        (lambda c, a, b: TransportProblem(a, b, c, Entropic(0.0)), "epsilon"),
        (lambda c, a, b: TransportProblem(a, b, c, Entropic(-1.0)), "epsilon"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(build, name: str) -> None:
    problem = _problem("numpy")
    with pytest.raises(ValueError, match=name):
        build(np.array(problem.cost), np.array(problem.a), np.array(problem.b))


@pytest.mark.parametrize("option", [{"tol": -1.0}, {"max_iter": 0}, {"check_every": 0}, {"time_limit": 0.0}])
def test_bad_options_raise(option: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        _solve(_problem("numpy"), "numba", **option)


# ------------------------------------------------------------------------------------------ hard regimes
@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_epsilon_never_returns_nan(backend: str) -> None:
    """eps = 1e-5 of the largest cost: converge or say why not; never NaN."""
    result = _solve(_problem(backend, epsilon=1e-5), backend, tol=1e-9, max_iter=300, check_every=100)
    assert result.success or (result.status in (Status.MAX_ITER, Status.NUMERICAL_ERROR) and result.message)
    for value in (result.x.plan, *result.x.potentials, result.fun, result.residuals["marginal_error"]):
        assert not np.isnan(_np(value)).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_path(backend: str, solved: dict) -> None:
    result = _solve(_problem(backend, dtype=np.float32), backend)  # default tol for float32: 1e-5
    assert result.success, result.message
    assert result.x.plan.dtype == np.float32 and result.x.potentials[0].dtype == np.float32
    assert result.residuals["marginal_error"] <= 5e-5
    np.testing.assert_allclose(_np(result.x.plan), solved["numpy"].x.plan, rtol=0, atol=2e-5)


# ------------------------------------------------------------------------------------- the JAX Python loop
def test_jax_chunked_path_with_callback_and_time_limit(solved: dict) -> None:
    problem = _problem("jax")
    seen = []
    result = _solve(problem, "jax", tol=1e-300, callback=lambda state: seen.append(state.nit) or len(seen) >= 3)
    assert result.status is Status.CALLBACK_STOP and seen == [10, 20, 30] and result.nit == 30
    assert isinstance(result.x.plan, jax.Array)
    result = _solve(problem, "jax", tol=1e-13, time_limit=60.0)
    assert result.status is Status.CONVERGED and result.history.n_records >= 2
    np.testing.assert_allclose(_np(result.x.plan), solved["numpy"].x.plan, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="callback"):
        jax.jit(lambda c: _solve(TransportProblem(problem.a, problem.b, c, Entropic(EPSILON)), "jax",
                                 callback=lambda s: False).fun)(problem.cost)
