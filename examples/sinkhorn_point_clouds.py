"""Entropic OT between two 2-D point clouds with Sinkhorn, compared with the exact cost from POT.

Run: python examples/sinkhorn_point_clouds.py
"""

import numpy as np
import ot

import optkit
from optkit.problems import Entropic, TransportProblem

rng = np.random.default_rng(0)
x = rng.normal(size=(300, 2))
y = rng.normal(size=(400, 2)) * [0.5, 1.5] + [1.0, 0.5]

# Cost divided by its maximum, so epsilon is relative to the largest cost.
problem = TransportProblem.from_points(x, y, normalize="max", regularization=Entropic(0.01))
result = optkit.solve(problem, "sinkhorn", tol=1e-8)
print(result)

exact = ot.emd2(problem.a, problem.b, np.asarray(problem.cost))
print(f"entropic transport cost {result.x.cost:.6f}, exact OT cost {exact:.6f}, "
      f"relative gap {(result.x.cost - exact) / exact:.2%}")
print(f"plan shape {result.x.plan.shape}, marginal error {result.residuals['marginal_error']:.2e}, "
      f"{result.nit} iterations on the {result.backend} backend")
