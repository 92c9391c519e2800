"""The per-call shortcuts behind the bilevel benchmark timings give the same numbers as the plain computations.

* benchopt quadratic oracles: the stacked full-batch forms (one (n+m) x (n+m) matrix, or its y columns when v_x = 0)
  against the per-sample minibatch formulas over all samples (an independent code path) and central differences;
  agreement to 1e-10 relative (rounding of sums over 128 samples; central differences of a quadratic are exact up
  to rounding, checked at 1e-6 relative for step 1e-5).
* ``finite``: finite entries whose sum overflows are finite; NaN and infinities are not.
* the lower-Hessian check is computed once per problem (counted Hessian-vector products).
* penalty's gradient reuse at a re-entered solve: bit-identical iterates to a run without reuse, fewer calls.
* penalty's fused Numba inner step against its NumPy branch (one step, every branch; whole runs).
"""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from optkit.problems.bilevel import BilevelProblem, FiniteSum
from optkit.problems.library.bilevel_toys import benchopt_quadratic
from optkit.solvers.bilevel import _common
from optkit.solvers.bilevel import penalty as penalty_module


@pytest.fixture(scope="module")
def small_toy():
    return benchopt_quadratic(20, 20, 128, seed=0)


def _minibatch_all(spec: FiniteSum) -> np.ndarray:
    # all samples, one repeated: length N + 1 takes the per-sample (minibatch) branch; the repeat is undone below
    n = spec.n_samples
    return np.r_[np.arange(n), 0]


def test_quadratic_oracles_match_per_sample_formulas(small_toy) -> None:
    rng = np.random.default_rng(3)
    spec = small_toy.problem.lower.spec
    n_samples = spec.n_samples
    full = np.arange(n_samples)
    x, y, vx, vy = (rng.standard_normal(20) for _ in range(4))
    # mean over N + 1 indices (sample 0 twice) -> mean over N: (N+1) * m_{N+1} - term_0 = N * m_N
    def over_all(fun, *args):
        both = fun(*args, _minibatch_all(spec))
        first = fun(*args, np.array([0]))
        if isinstance(both, tuple):
            return tuple(((n_samples + 1) * b - f) / n_samples for b, f in zip(both, first))
        return ((n_samples + 1) * both - first) / n_samples

    value_ref = over_all(spec.fun, x, y)
    assert spec.fun(x, y, full) == pytest.approx(value_ref, rel=1e-10)
    for got, ref in zip(spec.grad(x, y, full), over_all(spec.grad, x, y)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    for v_x in (vx, np.zeros(20)):  # the general product and the y-columns-only branch
        for got, ref in zip(spec.hvp(x, y, v_x, vy, full), over_all(spec.hvp, x, y, v_x, vy)):
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
        h = 1e-5
        plus, minus = spec.grad(x + h * v_x, y + h * vy, full), spec.grad(x - h * v_x, y - h * vy, full)
        for got, p, m in zip(spec.hvp(x, y, v_x, vy, full), plus, minus):
            np.testing.assert_allclose(got, (p - m) / (2 * h), rtol=1e-6, atol=1e-8)


def test_finite() -> None:
    big = np.full(4, 1e308)  # finite entries whose sum overflows
    assert _common.finite(big, np.zeros(3))
    assert not _common.finite(np.array([1.0, np.nan]))
    assert not _common.finite(np.zeros(2), np.array([np.inf, -np.inf]))
    assert not _common.finite(np.array([1e308, 1e308, np.inf]))
    assert _common.finite(np.ones((2, 3))) and not _common.finite(np.array([[1.0], [np.nan]]))
    for bad in (np.nan, np.inf, -np.inf):
        v = np.zeros(100)
        v[57] = bad
        assert not _common.finite(np.ones(100), v)


def test_lower_hessian_check_once_per_problem() -> None:
    m = 5
    calls = {"hvp": 0}

    def hvp(x, y, vx, vy, idx):
        calls["hvp"] += 1
        return np.zeros(1), 2.0 * vy

    lower = FiniteSum(lambda x, y, idx: float(y @ y), 1, grad=lambda x, y, idx: (np.zeros(1), 2.0 * y), hvp=hvp)
    upper = FiniteSum(lambda x, y, idx: float(x @ x + y @ y), 1,
                      grad=lambda x, y, idx: (2.0 * x, 2.0 * y), hvp=lambda x, y, vx, vy, idx: (2 * vx, 2 * vy))
    problem = BilevelProblem(upper, lower, x0=np.zeros(1), y0=np.zeros(m))
    calls["hvp"] = 0
    assert _common.strongly_convex_unconstrained(problem, "aid") is None
    assert _common.strongly_convex_unconstrained(problem, "itd") is None
    assert calls["hvp"] == m


def test_penalty_gradient_reuse_same_iterates(small_toy, monkeypatch) -> None:
    problem = small_toy.problem
    options = {"tol": 1e-8, "max_iter": 400}
    reused = optkit.solve(problem, "penalty", **options)
    original = penalty_module._Copies.solve

    def no_reuse(self, *args, **kwargs):
        self._last = None
        return original(self, *args, **kwargs)

    monkeypatch.setattr(penalty_module._Copies, "solve", no_reuse)
    plain = optkit.solve(problem, "penalty", **options)
    assert reused.nit == plain.nit
    np.testing.assert_array_equal(reused.x[0], plain.x[0])
    np.testing.assert_array_equal(reused.x[1], plain.x[1])
    def calls(r):
        return r.counts["upper_grad"] + r.counts["lower_grad"]

    assert calls(reused) < calls(plain)


# ---------------------------------------------------------------------- y-block and paired lower gradients
# The quadratic toys give FiniteSum(grad_y=..., grad_pair=...): the y-rows of the stacked matrix, and the gradient
# at (x, z) as grad(x, y) + K[:, y](z - y). They must agree with the plain gradient (an independent product) up to
# rounding: 1e-12 relative (sums of 40 products of O(1) entries).
def _plain(spec: FiniteSum) -> FiniteSum:
    return FiniteSum(spec.fun, spec.n_samples, grad=spec.grad, hvp=spec.hvp, name=spec.name)


def _without_shortcuts(problem: BilevelProblem) -> BilevelProblem:
    return BilevelProblem(_plain(problem.upper.spec), _plain(problem.lower.spec), x0=problem.x0, y0=problem.y0)


def test_quadratic_shortcuts_match_plain_gradient(small_toy) -> None:
    rng = np.random.default_rng(5)
    problem = small_toy.problem
    x, y, z = (rng.standard_normal(20) for _ in range(3))
    for level in (problem.upper, problem.lower):
        assert level.has_fast_paths
        gx, gy = level.grad(x, y)
        scale = max(np.abs(gx).max(), np.abs(gy).max())
        np.testing.assert_allclose(level.grad_y(x, y), gy, rtol=0, atol=1e-12 * scale)
        (pgx, pgy), (qgx, qgy) = level.grad_pair(x, y, z)
        rx, ry = level.grad(x, z)
        for got, ref in ((pgx, gx), (pgy, gy), (qgx, rx), (qgy, ry)):
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * scale)


def test_shortcuts_fall_back_to_grad(small_toy) -> None:
    calls = {"grad": 0}
    spec = small_toy.problem.lower.spec

    def grad(x, y, idx):
        calls["grad"] += 1
        return spec.grad(x, y, idx)

    plain = BilevelProblem(small_toy.problem.upper.spec, FiniteSum(spec.fun, spec.n_samples, grad=grad, hvp=spec.hvp),
                           x0=np.zeros(20), y0=np.zeros(20))
    lower = plain.lower
    assert not lower.has_fast_paths
    x, y, z = np.ones(20), np.arange(20.0), -np.ones(20)
    calls["grad"] = 0
    np.testing.assert_array_equal(lower.grad_y(x, y), spec.grad(x, y, np.arange(spec.n_samples))[1])
    (_, _), (gx_z, _) = lower.grad_pair(x, y, z)
    np.testing.assert_array_equal(gx_z, spec.grad(x, z, np.arange(spec.n_samples))[0])
    assert calls["grad"] == 3  # one for grad_y, two for grad_pair


def test_finite_sum_rejects_non_callable_shortcuts() -> None:
    with pytest.raises(TypeError, match="grad_y"):
        FiniteSum(lambda x, y, i: 0.0, 1, grad_y=1.0)
    with pytest.raises(TypeError, match="grad_pair"):
        FiniteSum(lambda x, y, i: 0.0, 1, grad_pair="no")


@pytest.mark.parametrize(("method", "options"), [
    ("aid", {"max_iter": 30}),
    # penalty's x-direction is (grad_x f(x, y) - grad_x f(x, z)) / sigma: rounding differences of the gradients
    # (~1e-16 relative) reach x amplified by 1/sigma and by the BB steps, so the 1e-12 comparison takes sigma = 1e-2
    ("penalty", {"max_iter": 20, "sigma": 1e-2}),
])
def test_same_iterates_and_counts_with_and_without_shortcuts(small_toy, method, options) -> None:
    fast = optkit.solve(small_toy.problem, method, tol=1e-300, **options)
    plain = optkit.solve(_without_shortcuts(small_toy.problem), method, tol=1e-300, **options)
    assert fast.nit == plain.nit == options["max_iter"]
    assert fast.counts == plain.counts
    np.testing.assert_allclose(fast.x[0], plain.x[0], rtol=0, atol=1e-12 * np.abs(plain.x[0]).max())
    np.testing.assert_allclose(fast.x[1], plain.x[1], rtol=0, atol=1e-12 * np.abs(plain.x[1]).max())


def test_penalty_default_sigma_same_counts_with_and_without_shortcuts(small_toy) -> None:
    # default sigma = 1e-5: the 1/sigma amplification of rounding (see above) allows ~1e-16 * 1e5 per step
    fast = optkit.solve(small_toy.problem, "penalty", tol=1e-300, max_iter=5)
    plain = optkit.solve(_without_shortcuts(small_toy.problem), "penalty", tol=1e-300, max_iter=5)
    assert fast.counts == plain.counts
    np.testing.assert_allclose(fast.x[0], plain.x[0], rtol=0, atol=1e-9 * np.abs(plain.x[0]).max())


def test_shortcuts_are_used_by_the_default_loops(small_toy) -> None:
    used = {"grad_y": 0, "grad_pair": 0}
    spec = small_toy.problem.lower.spec

    def grad_y(x, y):
        used["grad_y"] += 1
        return spec.grad_y(x, y)

    def grad_pair(x, y, z):
        used["grad_pair"] += 1
        return spec.grad_pair(x, y, z)

    lower = FiniteSum(spec.fun, spec.n_samples, grad=spec.grad, hvp=spec.hvp, grad_y=grad_y, grad_pair=grad_pair)
    problem = BilevelProblem(small_toy.problem.upper.spec, lower, x0=np.zeros(20), y0=np.zeros(20))
    aid_result = optkit.solve(problem, "aid", tol=1e-300, max_iter=5)
    assert used["grad_y"] > 0 and used["grad_pair"] == 0
    used["grad_y"] = 0
    penalty_result = optkit.solve(problem, "penalty", tol=1e-300, max_iter=5)
    assert used["grad_pair"] > 0
    assert aid_result.counts["lower_grad"] > 0 and penalty_result.counts["lower_grad"] >= 2 * used["grad_pair"]


# ------------------------------------------------------------------------ x-block shortcut (split gradients)
# With grad_y and grad_x on both levels, penalty's inner steps use y-blocks only and complete the x-blocks at the
# returned points; the iterates and counts are compared with the plain problem by the tests above (the toys give
# both shortcuts). Here: grad_x agrees with grad(...)[0] to rounding (1e-12 relative, as above), falls back to it,
# and the split path is the one taken.
def test_quadratic_grad_x_matches_plain_gradient(small_toy) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal(20), rng.standard_normal(20)
    for level in (small_toy.problem.upper, small_toy.problem.lower):
        assert level.has_split_grad
        gx, gy = level.grad(x, y)
        scale = max(np.abs(gx).max(), np.abs(gy).max())
        np.testing.assert_allclose(level.grad_x(x, y), gx, rtol=0, atol=1e-12 * scale)


def test_grad_x_falls_back_and_rejects_non_callable(small_toy) -> None:
    plain = _without_shortcuts(small_toy.problem)
    x, y = np.ones(20), np.arange(20.0)
    assert not plain.lower.has_split_grad
    np.testing.assert_array_equal(plain.lower.grad_x(x, y), plain.lower.grad(x, y)[0])
    with pytest.raises(TypeError, match="grad_x"):
        FiniteSum(lambda x, y, i: 0.0, 1, grad_x=1.0)


def test_penalty_split_path_completes_x_blocks_only_at_returned_points(small_toy) -> None:
    used = {"grad_x": 0, "grad_y": 0, "grad_pair": 0}

    def wrap(spec: FiniteSum) -> FiniteSum:
        def counted(name):
            def call(*args):
                used[name] += 1
                return getattr(spec, name)(*args)
            return call
        return FiniteSum(spec.fun, spec.n_samples, grad=spec.grad, hvp=spec.hvp, grad_y=counted("grad_y"),
                         grad_x=counted("grad_x"), grad_pair=counted("grad_pair"))

    p = small_toy.problem
    problem = BilevelProblem(wrap(p.upper.spec), wrap(p.lower.spec), x0=p.x0, y0=p.y0)
    result = optkit.solve(problem, "penalty", tol=1e-300, max_iter=10)
    assert used["grad_pair"] == 0
    # three y-blocks per inner evaluation point (one upper, two lower), three x-blocks per returned point
    assert used["grad_y"] > used["grad_x"] > 0 and used["grad_x"] % 3 == 0
    plain = optkit.solve(_without_shortcuts(p), "penalty", tol=1e-300, max_iter=10)
    assert result.counts == plain.counts


def test_quadratic_grad_y_pair_matches_plain_gradient_and_falls_back(small_toy) -> None:
    # the toys' y-block at z is the one at y plus K_yy (z - y): equal to the plain y-block up to rounding (1e-12
    # relative, as above); without the shortcut, two grad_y calls
    rng = np.random.default_rng(11)
    x, y, z = (rng.standard_normal(20) for _ in range(3))
    plain = _without_shortcuts(small_toy.problem)
    for level, ref in ((small_toy.problem.lower, plain.lower), (small_toy.problem.upper, plain.upper)):
        gy, gz = level.grad_y_pair(x, y, z)
        ry, rz = ref.grad(x, y)[1], ref.grad(x, z)[1]
        scale = max(np.abs(ry).max(), np.abs(rz).max())
        np.testing.assert_allclose(gy, ry, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(gz, rz, rtol=0, atol=1e-12 * scale)
        fy, fz = ref.grad_y_pair(x, y, z)
        np.testing.assert_array_equal(fy, ry)
        np.testing.assert_array_equal(fz, rz)
    with pytest.raises(TypeError, match="grad_y_pair"):
        FiniteSum(lambda x, y, i: 0.0, 1, grad_y_pair=1.0)


# ---------------------------------------------------------------------- penalty's fused Numba inner step
def _reference_step(vy, vz, Fy, fy_y, fy_z, y, z, previous, has_previous, sigma, lip_f, lip_F, t):
    """The inner iteration of ``_Copies.solve`` written out in NumPy (its unfused branch), for one step."""
    gy, gz = sigma * Fy + fy_y, fy_z
    raised = False
    if has_previous:
        vy0, vz0, gy0, gz0 = previous
        est = np.linalg.norm(gz - gz0) / np.linalg.norm(vz - vz0)
        if est > lip_f:
            lip_f, raised = 1.1 * est, True
        est = np.linalg.norm(gy - gy0) / np.linalg.norm(vy - vy0)
        if est > lip_f + sigma * lip_F:
            lip_F, raised = 1.1 * (est - lip_f) / sigma, True
    if raised:
        t = 1.0
    beta = 1.0 / (lip_f + sigma * lip_F)
    y_new, z_new = vy - beta * gy, vz - beta * gz
    r = (np.linalg.norm(gy), np.linalg.norm(gz), np.linalg.norm(gy - gz) / sigma)
    t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
    if (beta * gy) @ (y_new - y) + (beta * gz) @ (z_new - z) > 0:
        t = t_new = 1.0
    momentum = (t - 1.0) / t_new
    points = np.array([y_new, z_new, y_new + momentum * (y_new - y), z_new + momentum * (z_new - z)])
    return points, lip_f, lip_F, raised, r, t_new


@pytest.mark.parametrize("case", ["first", "raised", "restart", "momentum"])
def test_copies_step_kernel_matches_numpy_reference(case) -> None:
    from optkit.kernels.numba_bilevel import copies_step

    rng = np.random.default_rng(3)
    m, sigma = 7, 1e-3
    vy, vz, Fy, fy_y, fy_z, y, z = (rng.standard_normal(m) for _ in range(7))
    previous = np.array([vy + 1e-3 * rng.standard_normal(m), vz + 1e-3 * rng.standard_normal(m),
                         sigma * Fy + fy_y + 1e-5 * rng.standard_normal(m), fy_z + 1e-5 * rng.standard_normal(m)])
    lip_f, lip_F, t = 10.0, 5.0, 3.0
    if case == "raised":  # secants ~1e-5 / 1e-3 = 1e-2 per unit: above lip_f = 1e-3
        lip_f = 1e-3
    g_y = sigma * Fy + fy_y
    if case == "restart":  # y_new - y = (5 - beta) g: along the step, so the gradient restart fires
        y, z = vy - 5.0 * g_y, vz - 5.0 * fy_z
    if case == "momentum":  # y_new - y = -(5 + beta) g: against the step, no restart, momentum kept
        y, z = vy + 5.0 * g_y, vz + 5.0 * fy_z
    has_previous = case != "first"
    expected = _reference_step(vy, vz, Fy, fy_y, fy_z, y, z, previous, has_previous, sigma, lip_f, lip_F, t)
    work = previous.copy()
    points, lf, lF, raised, r_y, r_z, r_d, t_new = copies_step(vy, vz, Fy, fy_y, fy_z, y, z, work, has_previous,
                                                               sigma, lip_f, lip_F, t)
    assert raised == expected[3] == (case == "raised")
    assert (t_new == 1.0) == (case == "restart")
    if case == "momentum":
        assert t_new > 1.0 and not np.allclose(points[2], points[0])
    np.testing.assert_allclose(points, expected[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose([lf, lF, r_y, r_z, r_d, t_new], [expected[1], expected[2], *expected[4], expected[5]],
                               rtol=1e-12)
    # the work array now holds this step's evaluation points and gradients
    np.testing.assert_array_equal(work, np.array([vy, vz, sigma * Fy + fy_y, fy_z]))


def test_penalty_fused_inner_loop_same_run_as_numpy(small_toy, monkeypatch) -> None:
    from optkit.problems.library.bilevel_toys import t2

    for problem, options in ((small_toy.problem, {"tol": 1e-8, "max_iter": 150}), (t2().problem, {})):
        fused = optkit.solve(problem, "penalty", **options)
        monkeypatch.setattr(penalty_module._Copies, "fused", False)
        plain = optkit.solve(problem, "penalty", **options)
        monkeypatch.setattr(penalty_module._Copies, "fused", True)
        # same decisions (counts, iterations); the two sum norms in another order, so equal up to rounding
        assert fused.nit == plain.nit and dict(fused.counts) == dict(plain.counts)
        np.testing.assert_allclose(fused.x[0], plain.x[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fused.x[1], plain.x[1], rtol=1e-10, atol=1e-12)
