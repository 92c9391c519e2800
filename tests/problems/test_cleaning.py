"""Data hyper-cleaning problem: hand-written gradients and HVPs against central finite differences, the lower
solution against scikit-learn's weighted multinomial logistic regression, the corruption, the F1 score."""

from __future__ import annotations

import numpy as np
import pytest

from optkit.problems.library.cleaning import accuracy, cleaner_f1, data_cleaning


@pytest.fixture(scope="module")
def cleaning():
    return data_cleaning("sklearn", n_train=60, n_val=40, n_test=50, seed=3, l2=1e-2)


def _point(cleaning, rng):
    n, m = cleaning.problem.dims
    return rng.normal(size=n), 0.1 * rng.normal(size=m)


def test_corruption_and_splits(cleaning) -> None:
    assert cleaning.problem.dims == (60, 65 * 10)
    assert int(cleaning.corrupted.sum()) == 30
    noisy = cleaning.train[1]
    assert np.all(noisy[cleaning.corrupted] != cleaning.clean_train_labels[cleaning.corrupted])
    assert np.all(noisy[~cleaning.corrupted] == cleaning.clean_train_labels[~cleaning.corrupted])
    again = data_cleaning("sklearn", n_train=60, n_val=40, n_test=50, seed=3, l2=1e-2)
    assert np.array_equal(again.corrupted, cleaning.corrupted) and np.array_equal(again.train[1], noisy)
    assert np.allclose(cleaning.train[0][:, -1], 1.0) and cleaning.train[0].max() <= 1.0


@pytest.mark.parametrize("level", ["lower", "upper"])
def test_gradient_matches_finite_differences(cleaning, rng, level) -> None:
    objective = getattr(cleaning.problem, level)
    x, y = _point(cleaning, rng)
    gx, gy = objective.grad(x, y)
    h = 1e-6
    for _ in range(3):
        dx, dy = rng.normal(size=x.size), rng.normal(size=y.size)
        fd = (objective.value(x + h * dx, y + h * dy) - objective.value(x - h * dx, y - h * dy)) / (2 * h)
        # central differences: O(h^2) truncation, O(eps/h) ~ 1e-10 rounding on values of order 1
        assert gx @ dx + gy @ dy == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("level", ["lower", "upper"])
def test_hvp_matches_finite_differences_of_gradient(cleaning, rng, level) -> None:
    objective = getattr(cleaning.problem, level)
    x, y = _point(cleaning, rng)
    dx, dy = rng.normal(size=x.size), rng.normal(size=y.size)
    hx, hy = objective.hvp(x, y, dx, dy)
    h = 1e-5
    plus, minus = objective.grad(x + h * dx, y + h * dy), objective.grad(x - h * dx, y - h * dy)
    scale = max(np.abs(hx).max(), np.abs(hy).max())
    assert np.allclose(hx, (plus[0] - minus[0]) / (2 * h), rtol=1e-5, atol=1e-7 * scale)
    assert np.allclose(hy, (plus[1] - minus[1]) / (2 * h), rtol=1e-5, atol=1e-7 * scale)


def test_minibatch_oracles_with_repeated_indices(cleaning, rng) -> None:
    """A batch with a repeated index equals the explicit mean of per-example oracles (scattered, not overwritten)."""
    spec = cleaning.problem.lower.spec
    x, y = _point(cleaning, rng)
    idx = np.array([4, 7, 4, 11])
    gx, gy = spec.grad(x, y, idx)
    singles = [spec.grad(x, y, np.array([i])) for i in idx]
    assert np.allclose(gx, np.mean([g[0] for g in singles], axis=0))
    assert np.allclose(gy, np.mean([g[1] for g in singles], axis=0))
    vx, vy = rng.normal(size=x.size), rng.normal(size=y.size)
    hx, hy = spec.hvp(x, y, vx, vy, idx)
    singles = [spec.hvp(x, y, vx, vy, np.array([i])) for i in idx]
    assert np.allclose(hx, np.mean([h[0] for h in singles], axis=0))
    assert np.allclose(hy, np.mean([h[1] for h in singles], axis=0))


def test_lower_solution_matches_sklearn_weighted_logistic_regression(cleaning, rng) -> None:
    """At a fixed x the lower problem is sklearn's multinomial logistic regression with sample weights
    sigma(x_i), no separate intercept (our bias column is penalised) and C = 1 / (N lambda)."""
    from scipy.optimize import minimize
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression

    lower = cleaning.problem.lower
    x = rng.normal(size=cleaning.problem.dims[0])
    n = x.size
    res = minimize(lambda y: (lower.value(x, y), lower.grad(x, y)[1]), np.zeros(cleaning.problem.dims[1]),
                   jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 5000})
    A, labels = cleaning.train
    model = LogisticRegression(C=1.0 / (n * 1e-2), fit_intercept=False, tol=1e-10, max_iter=10_000)
    model.fit(A, labels, sample_weight=expit(x))
    W = cleaning.weights(res.x)
    # both minimisers are accurate to ~1e-6 (gradient tolerances above); the l2 term makes W unique
    assert np.allclose(W.T, model.coef_, atol=1e-4)


def test_accuracy_and_f1(cleaning) -> None:
    from sklearn.metrics import f1_score

    x = np.where(cleaning.corrupted, -1.0, 1.0)
    assert cleaner_f1(x, cleaning.corrupted) == 1.0
    x_random = np.random.default_rng(0).normal(size=x.size)
    assert cleaner_f1(x_random, cleaning.corrupted) == pytest.approx(f1_score(cleaning.corrupted, x_random < 0))
    assert cleaner_f1(np.ones(x.size), cleaning.corrupted) == 0.0
    assert accuracy(cleaning, np.zeros(cleaning.problem.dims[1])) == pytest.approx(
        np.mean(cleaning.test[1] == 0))  # W = 0: argmax of ties is class 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="corruption"):
        data_cleaning("sklearn", n_train=10, n_val=10, n_test=10, corruption=1.5)
    with pytest.raises(ValueError, match="l2"):
        data_cleaning("sklearn", n_train=10, n_val=10, n_test=10, l2=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        data_cleaning("sklearn", n_train=1000, n_val=1000, n_test=10)
    with pytest.raises(ValueError, match="n_train"):
        data_cleaning("sklearn", n_train=0)
