"""WHAT is solved: problem descriptions (data and math, validated at construction; no iteration logic)."""

from optkit.problems.transport import Entropic, Regularization, TransportProblem, pairwise_cost

__all__ = ["TransportProblem", "Regularization", "Entropic", "pairwise_cost"]
