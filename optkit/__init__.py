"""optkit: solvers for constrained, bilevel and optimal-transport problems.

Problems say *what* (:mod:`optkit.problems`), solvers say *how* (:mod:`optkit.solvers`), and one
:class:`Result` says *what happened*. Entry point: :func:`solve`.
"""

import logging

from optkit.problems import Entropic, TransportProblem
from optkit.solvers import History, Result, Status, available, solve

__version__ = "0.1.0"
__all__ = ["solve", "available", "Result", "Status", "History", "TransportProblem", "Entropic", "__version__"]

logging.getLogger("optkit").addHandler(logging.NullHandler())
