"""Optimal-transport solvers. Each module registers its methods with :func:`optkit.solvers.registry.register`."""

from optkit.solvers.transport._solution import TransportSolution
from optkit.solvers.transport.sinkhorn import sinkhorn

__all__ = ["TransportSolution", "sinkhorn"]
