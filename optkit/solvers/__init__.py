"""HOW problems are solved: the registry, the iteration driver, the result type and one module per method."""

from optkit.solvers.api import solve
from optkit.solvers.registry import available, register, select
from optkit.solvers.result import History, Result, Status

__all__ = ["solve", "available", "register", "select", "Result", "Status", "History"]
