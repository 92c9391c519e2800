"""The registry and ``optkit.solve``: list the methods for a problem, then stop a solver from a callback.

Run: python examples/solve_with_callback.py
"""

import numpy as np

import optkit
from optkit.problems import Entropic, TransportProblem
from optkit.solvers.registry import get

rng = np.random.default_rng(1)
problem = TransportProblem.from_points(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 1.0,
                                       normalize="max", regularization=Entropic(0.005))

print("methods that accept this problem:", optkit.available(problem))
info = get("sinkhorn")
print(f"sinkhorn: backends {info.backends}, options {sorted(info.options)}")

errors = []


def watch(state):
    """Called after each recorded iteration; returning True stops the solver."""
    errors.append(state.residuals["marginal_error"])
    return state.residuals["marginal_error"] < 1e-4  # good enough for us: stop early


result = optkit.solve(problem, "sinkhorn", tol=1e-12, callback=watch)
print(result.status.name, "-", result.message)
print(f"{len(errors)} callback calls; marginal error went from {errors[0]:.2e} to {errors[-1]:.2e}")
print("history columns:", list(result.history))
