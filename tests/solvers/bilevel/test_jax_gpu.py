"""The bilevel JAX backends on a GPU (marked ``gpu``; skipped without one). Run on a GPU machine with
``JAX_PLATFORMS=cuda pytest -m gpu tests/solvers/bilevel/test_jax_gpu.py`` (tests/conftest.py defaults
``JAX_PLATFORMS`` to ``cpu``).

Each method's JAX backend must take the NumPy backend's decisions on benchopt's quadratic (d = 100): the same
oracle counts when it stops at the same iteration budget, and the same final point to 1e-6 (rounding differs
between the GPU's reductions and BLAS; the solvers' inner stopping tests are relative, so the iterates stay within
the tolerance the runs stop at), and both within the stopping tolerance's reach of the closed-form solution.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import optkit  # noqa: E402
from optkit.problems.library.bilevel_toys import benchopt_quadratic  # noqa: E402


@pytest.mark.gpu
@pytest.mark.parametrize("method,options", [("aid", {}), ("penalty", {}),
                                            ("f2sa", {"lambda0": 1e5, "lambda_max": 1e5, "inner_steps": 2})])
def test_bilevel_jax_backends_on_gpu_match_numpy(method: str, options: dict) -> None:
    if jax.default_backend() != "gpu":
        pytest.skip("no JAX GPU device (tests/conftest.py defaults JAX_PLATFORMS to cpu; set it to run this)")
    plain, traced = benchopt_quadratic(seed=0), benchopt_quadratic(seed=0, jax=True)
    budget = {"max_iter": 40, "tol": 1e-300}
    ours = optkit.solve(traced.problem, method, backend="jax", **budget, **options)
    reference = optkit.solve(plain.problem, method, backend="numpy", **budget, **options)
    assert ours.nit == reference.nit == 40
    assert ours.counts == pytest.approx(reference.counts, rel=0.02)
    converged = optkit.solve(traced.problem, method, backend="jax", tol=1e-6, **options)
    assert converged.success, converged.message
    assert float(np.sum(traced.hypergradient(converged.x[0]) ** 2)) <= 1e-8
