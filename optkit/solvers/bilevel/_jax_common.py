r"""Shared pieces of the bilevel solvers' JAX backend (``backend="jax"``).

The JAX backend of a bilevel solver keeps its outer loop (step rule, safeguards, stopping test, history, callback)
in Python, shared with the NumPy backend, and runs each outer iteration's inner work (the lower-level steps, the
linear solve, the gradients at the returned point) as one compiled call: ``jax.jit`` of a ``lax.while_loop``, on
whatever device JAX uses (CPU or GPU). Derivatives come from JAX autodiff of the two levels, so the backend needs
JAX-traceable levels:

* a plain callable ``F(x, y)`` (``BilevelProblem(upper=F, ...)``),
* a :class:`~optkit.problems.functions.Function` built by ``Function.from_jax`` (a function of ``z = (x, y)``),
* a :class:`~optkit.problems.bilevel.FiniteSum` without ``grad`` (``fun(x, y, idx)`` traced, full batch).

Everything runs in float64 (a local ``jax.enable_x64`` context, :func:`x64`); the global JAX configuration is left
untouched. Oracle counts are those of the NumPy backend (each gradient of a level, each Hessian-vector product,
each function value), returned by the compiled calls as integers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optkit.problems.bilevel import BilevelProblem, FiniteSum
from optkit.problems.functions import Function, _x64_context
from optkit.problems.sets import Box, Reals

__all__ = ["auto_backend", "jax_levels", "jax_projection", "jax_support", "x64"]


def x64() -> Any:
    """Context manager: float64 JAX types for the calls made inside it."""
    return _x64_context()


def _traceable(spec: Any) -> bool:
    if isinstance(spec, FiniteSum):
        return spec.grad is None
    if isinstance(spec, Function):
        return spec.is_jax
    return callable(spec)


def jax_support(problem: BilevelProblem, method: str, *, constraints: bool = False) -> str | None:
    """Why ``backend="jax"`` cannot run ``method`` on ``problem`` (``None`` when it can): both levels JAX-traceable,
    X = R^n or a box, Y = R^m, no upper-level set, and (unless ``constraints``) no coupled lower constraints."""
    for name, objective in (("upper", problem.upper), ("lower", problem.lower)):
        if not _traceable(objective.spec):
            return (f"{method} with backend='jax' needs JAX-traceable levels (a callable {name}(x, y), "
                    f"Function.from_jax or a FiniteSum without grad); the {name} level has hand-written NumPy "
                    "gradients: use backend='numpy'")
    if not isinstance(problem.x_set, (Reals, Box)):
        return (f"{method} with backend='jax' supports X = R^n or a Box, got {type(problem.x_set).__name__}: use "
                "backend='numpy'")
    if type(problem.y_set) is not Reals:
        return (f"{method} with backend='jax' needs Y = R^m, got {type(problem.y_set).__name__}: use "
                "backend='numpy'")
    if problem.upper_set is not None:
        return f"{method} with backend='jax' does not support an upper_set: use backend='numpy'"
    if problem.lower_constraints is not None and not constraints:
        return f"{method} with backend='jax' does not support coupled lower constraints: use backend='numpy'"
    return None


def auto_backend(requested: str, chosen: str, problem: BilevelProblem, method: str, *, options_ok: bool = True) -> str:
    """The backend for ``backend="auto"``: ``"jax"`` when both levels are JAX-traceable and the JAX backend takes
    the problem (:func:`jax_support`) and the options (``options_ok``): the NumPy backend would then call a compiled
    JAX function per oracle, 3-100x slower than the JAX backend on the toys; otherwise ``chosen`` (what
    :func:`~optkit.solvers.registry.resolve_backend` picked). An explicit ``backend`` is returned unchanged."""
    if requested == "auto" and options_ok and jax_support(problem, method) is None:
        return "jax"
    return chosen


def jax_levels(problem: BilevelProblem) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
    """The two levels as JAX-traceable functions ``F(x, y)`` and ``f(x, y)`` of 1-D arrays, returning scalars
    (finite sums over all their samples). Call :func:`jax_support` first."""
    import jax.numpy as jnp

    def level(spec: Any) -> Callable[[Any, Any], Any]:
        if isinstance(spec, FiniteSum):
            fun, count = spec.fun, spec.n_samples

            def full(x: Any, y: Any) -> Any:
                return fun(x, y, jnp.arange(count))

            return full
        if isinstance(spec, Function):
            stacked = spec._jax_fun

            def joined(x: Any, y: Any) -> Any:
                return stacked(jnp.concatenate((x, y)))

            return joined
        return spec

    return level(problem.upper.spec), level(problem.lower.spec)


def jax_projection(problem: BilevelProblem) -> Callable[[Any], Any]:
    """The projection onto X as a JAX function: the identity for R^n, ``jnp.clip`` for a box."""
    import jax.numpy as jnp

    x_set = problem.x_set
    if isinstance(x_set, Box):
        lower, upper = x_set.lower, x_set.upper  # NumPy float64 constants: float64 under x64() when traced

        def clip(x: Any) -> Any:
            return jnp.clip(x, lower, upper)

        return clip

    def identity(x: Any) -> Any:
        return x

    return identity
