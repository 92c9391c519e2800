"""optkit: solvers for constrained, bilevel and optimal-transport problems.

Problems say *what* (:mod:`optkit.problems`), solvers say *how* (:mod:`optkit.solvers`), and one
:class:`Result` says *what happened*. Entry point: :func:`solve`; :func:`available` lists the methods that accept
a problem.
"""

import logging

from optkit.problems import (
    BilevelProblem,
    BilinearGame,
    Entropic,
    Function,
    MinMaxProblem,
    MonotoneInclusion,
    NonlinearProgram,
    Quadratic,
    SparsityConstrained,
    TransportProblem,
)
from optkit.solvers import History, Result, Status, available, solve

__version__ = "0.1.0"
__all__ = [
    "solve",
    "available",
    "Result",
    "Status",
    "History",
    "Function",
    "TransportProblem",
    "Entropic",
    "Quadratic",
    "SparsityConstrained",
    "NonlinearProgram",
    "BilevelProblem",
    "MonotoneInclusion",
    "MinMaxProblem",
    "BilinearGame",
    "__version__",
]

logging.getLogger("optkit").addHandler(logging.NullHandler())
