"""Sinkhorn-Newton-Sparse, Table 1 of Tang et al. (ICLR 2024): Sinkhorn vs SNS to machine accuracy.

Instances, all at :math:`\\varepsilon = 1/1200` (the paper's :math:`\\eta = 1200`):

- random assignment, n = 500, :math:`C_{ij} \\sim U[0,1]`, uniform marginals
  (:func:`optkit.problems.library.transport_instances.random_assignment`);
- two digit images as densities on the pixel grid scaled to :math:`[0,1]^2`, squared-L2 and L1 ground costs
  (:func:`~optkit.problems.library.transport_instances.mnist_pair`, MNIST ``t10k`` images 0 and 1 when they are in
  the data home, scikit-learn's 8 x 8 digits otherwise), restricted to the pixels of positive mass.

Methods: ``"sinkhorn"`` and ``"sns"`` (defaults), both stopped at an L1 marginal error of ``1e-9``. The table has
the iterations (SNS: Sinkhorn updates + Newton steps), wall time and final error; the plots are the marginal error
against iterations and time. The quick slice uses n = 100, the 8 x 8 digits and a 3-second time limit (Sinkhorn needs about 10^6
updates on the n = 100 random assignment at this epsilon and stops on it).
"""

from __future__ import annotations

from typing import Any

from optkit.experiments.runner import Instance, MethodSpec
from optkit.problems import Entropic

NAME = "sns-table1"
DESCRIPTION = "SNS paper, Table 1: Sinkhorn vs Sinkhorn-Newton-Sparse to L1 marginal error 1e-9 at epsilon 1/1200."
METRICS = ("nit", "wall_time", "marginal_error", "sinkhorn_updates", "newton_steps")
RESIDUAL = "marginal_error"
EPSILON = 1 / 1200


def instances(quick: bool) -> list[Instance]:
    """Random assignment, then one digit pair with the L2 and the L1 cost."""
    from optkit.problems.library.digits import digit_images
    from optkit.problems.library.transport_instances import (
        mnist_pair,
        random_assignment,
    )

    n = 100 if quick else 500
    out = [Instance(f"random-assignment-n{n}", random_assignment(n, regularization=Entropic(EPSILON)),
                    {"kind": "random assignment", "n": n, "epsilon": EPSILON})]
    source = "sklearn" if quick else digit_images("auto")[2]
    for cost, label in (("sqeuclidean", "L2"), ("cityblock", "L1")):
        problem = mnist_pair(0, 1, cost=cost, source=source, support_only=True, regularization=Entropic(EPSILON))
        out.append(Instance(f"digits-{source}-0v1-{label}", problem,
                            {"kind": f"digits {label}", "source": source, "shape": list(problem.shape),
                             "epsilon": EPSILON}))
    return out


def methods(quick: bool) -> list[MethodSpec]:
    """Sinkhorn (the backend ``"auto"`` picks) and SNS, both to 1e-9."""
    limit = 3.0 if quick else 600.0  # quick: Sinkhorn stops on TIME_LIMIT on the random-assignment instance
    return [MethodSpec("sinkhorn", {"tol": 1e-9, "max_iter": 2_000_000, "time_limit": limit}, label="sinkhorn",
                       warmup=True),
            MethodSpec("sns", {"tol": 1e-9, "max_iter": 5_000, "time_limit": limit}, label="sns", warmup=True)]


def demo() -> dict[str, Any]:
    """The demo runs the quick slice."""
    return {"quick": True}
