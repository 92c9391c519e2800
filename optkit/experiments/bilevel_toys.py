"""``optkit reproduce bilevel-toys``: every applicable bilevel solver on the toys T1-T8 with known solutions.

Metrics: distance of x to the known solution (the global minimiser for the nonconvex toys T6/T7; T8 has no known
upper optimum, so its distance is that of y to the closed-form y*(x)), the upper objective, the computed lower-level
gap, the constraint violation, iterations and time. Methods that refuse a problem (AID/ITD on non-singleton or
coupled lower levels) appear with status NOT_APPLICABLE and their refusal message.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from optkit.experiments.runner import Instance, MethodSpec

NAME = "bilevel-toys"
DESCRIPTION = "Bilevel solvers on the toys T1-T8: distance to the known solution, iterations, time."
METRICS = ("nit", "wall_time", "x_error", "fun", "lower_gap", "constraint_violation")
RESIDUAL = None

#: (instance name, toy name, factory keyword arguments)
_FULL = [
    ("T1", "T1", {}), ("T2", "T2", {}), ("T3", "T3", {}), ("T4-n10", "T4", {"n": 10}), ("T5", "T5", {}),
    ("T6", "T6", {}), ("T7-1", "T7", {"variant": 1}), ("T7-2", "T7", {"variant": 2}), ("T8", "T8", {}),
]
_QUICK = [("T1", "T1", {}), ("T4-n3", "T4", {"n": 3})]


@lru_cache(maxsize=None)
def _toy(toy: str, args: tuple) -> Any:
    from optkit.problems.library.bilevel_toys import TOYS

    return TOYS[toy](**dict(args))


def instances(quick: bool) -> list[Instance]:
    grid = _QUICK if quick else _FULL
    out = []
    for name, toy, kwargs in grid:
        problem = _toy(toy, tuple(sorted(kwargs.items()))).problem
        out.append(Instance(name, problem, {"toy": toy, **kwargs}))
    return out


def methods(quick: bool) -> list[MethodSpec]:
    limit = {"time_limit": 2.0 if quick else 60.0}
    return [
        MethodSpec("penalty", limit), MethodSpec("v-pbgd", {**limit, "gamma": 100.0}, label="v-pbgd (gamma 100)"),
        MethodSpec("lv-hba", limit), MethodSpec("f2sa", limit), MethodSpec("aid", limit), MethodSpec("itd", limit),
    ]


def measure(instance: Instance, result: Any, reference: dict[str, Any]) -> dict[str, Any]:
    params = dict(instance.params)
    toy = _toy(params.pop("toy"), tuple(sorted(params.items())))
    x, y = result.x
    if toy.x_star is not None:
        error = float(np.linalg.norm(x - toy.x_star))
    elif toy.y_of_x is not None:
        error = float(np.linalg.norm(y - toy.y_of_x(x)))
    else:  # pragma: no cover - every toy has one of the two
        error = None
    return {"x_error": error, "lower_gap": result.info.get("lower_gap"),
            "constraint_violation": result.info.get("constraint_violation")}


def demo() -> dict[str, Any]:
    """T1 and T4 (n = 3) with every method (a few seconds)."""
    return {"quick": True}
